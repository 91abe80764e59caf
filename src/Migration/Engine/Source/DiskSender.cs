using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The guest's disk, source side, for every strategy. Without shared storage the destination
/// starts from the base it named in its <see cref="SetupReply"/> (or zeros): <see cref="Send"/>
/// ships only the blocks whose hash differs from what the destination holds (<see cref="DiskTransfer"/>),
/// then a <see cref="DiskDone"/> with the identity the destination must reach; each later call
/// ships the blocks changed since the last (the block "dirty map" is the per-block hashes, so a block
/// rewritten with the same bytes does not travel). Log shipping calls it once, at C0 (replay
/// regenerates every later write); pre-copy at its start, after every round (so the pause sends
/// only what the last round dirtied) and at the pause; stop-and-copy at the pause; post-copy
/// sends the list of missing blocks at the pause and the blocks after GO. With shared storage nothing is sent: at the first call the paused source
/// flushes the file and holds its commits from then on, and the destination opens the same file.
/// </summary>
internal sealed class DiskSender(SourceContext ctx)
{
    private ulong[]? _destination; // block hashes the destination holds (its base, then what was sent)
    private bool _destinationHasDisk;
    private bool _held;
    private ulong[]? _firstPass;     // what the first pass sent: how much a pause without rounds would have to send
    private readonly List<ulong> _passes = [];

    public Disk? Disk => ctx.Guest.Machine.Disk;
    public DiskPlan? Plan { get; private set; }
    public bool Shared => Plan?.Shared == true;
    public long BlocksSent { get; private set; }
    public long ZeroBlocks { get; private set; }
    public long Matched { get; private set; }
    /// <summary>At the last pass: blocks changed since the first (what the pause would send without the rounds).</summary>
    public long ChangedSinceFirstPass { get; private set; }

    /// <summary>
    /// Blocks whose hash changed since the last pass (pre-copy's convergence check, while the guest
    /// runs: a hash read mid-write only makes the count a little off).
    /// </summary>
    public int DirtyBlocks()
    {
        if (Disk is not { } disk || Shared || _destination == null || !_destinationHasDisk) return 0;
        var now = disk.BlockHashes;
        int n = 0;
        for (int b = 0; b < now.Length; b++) if (now[b] != _destination[b]) n++;
        return n;
    }

    /// <summary>The plan the setup carries (null without a disk): paths on the destination.</summary>
    public DiskPlan? PlanFor(MigrateCommand command, string? sourcePath)
    {
        if (Disk == null) return null;
        // Default: the same file for shared storage; otherwise the image's name, which the destination
        // resolves in its disk directory.
        string path = command.DiskPath.Length > 0 ? command.DiskPath
            : command.SharedDisk ? sourcePath ?? "" : Path.GetFileName(sourcePath ?? "");
        if (path.Length == 0) throw new HostException("the guest's disk has no path here; give the destination's with --disk-path FILE");
        if (command.SharedDisk && command.DiskBase.Length > 0) throw new HostException("--shared-disk and --disk-base exclude each other (a shared file needs no base)");
        return Plan = new DiskPlan { Path = path, Base = command.DiskBase, Shared = command.SharedDisk };
    }

    /// <summary>What the destination holds before the first block moves: its base's hashes, or zeros.</summary>
    public void OnSetupReply(SetupReply reply)
    {
        if (Disk is not { } disk || Shared) return;
        if (reply.DiskBase is { } b && b.BlockHashes.Count == disk.BlockCount) _destination = [.. b.BlockHashes];
        else
        {
            _destination = new ulong[disk.BlockCount];
            Array.Fill(_destination, Disk.ZeroBlockHash); // a fresh destination's image is all zeros
        }
    }

    /// <summary>
    /// With the guest paused: a shared file is made current (the flush) and the source stops committing
    /// to it, so the destination reads it as it is now. Nothing to do without shared storage.
    /// </summary>
    public void AtPause()
    {
        if (Disk is not { } disk || !Shared || _destinationHasDisk) return;
        disk.CommitsHeld = false;
        disk.Flush();
        disk.CommitsHeld = _held = true;
    }

    /// <summary>Ships what the destination lacks of <paramref name="snapshot"/>, then the identity it must reach.</summary>
    public void Send(DiskSnapshot snapshot, CancellationToken token)
    {
        var conn = ctx.Conn!;
        var hashes = snapshot.BlockHashes;
        var done = new DiskDone { Identity = Guest.Devices.Virtio.Block.Disk.Identity(hashes), ContentDigest = snapshot.ContentDigest };
        if (Shared && !_destinationHasDisk)
        {
            if (!_held) throw new InvalidOperationException("a shared disk must be flushed at a pause before the destination opens it");
            done.Shared = true;
        }
        else
        {
            var blocks = DiskTransfer.Differing(hashes, _destination);
            if (!_destinationHasDisk) Matched = snapshot.BlockCount - blocks.Count;
            foreach (var message in DiskTransfer.Encode(snapshot, blocks))
            {
                BlocksSent += message.Blocks.Count;
                ZeroBlocks += message.ZeroBlocks.Count;
                conn.Send(new Envelope { DiskBlocks = message }, ByteCategory.Disk, token);
            }
            _passes.Add((ulong)blocks.Count);
            if (_firstPass == null) _firstPass = hashes.ToArray();
            else ChangedSinceFirstPass = DiskTransfer.Changed(_firstPass, hashes).Count;
        }
        conn.Send(new Envelope { DiskDone = done }, ByteCategory.Disk, token);
        _destination = hashes.ToArray();
        _destinationHasDisk = true;
    }

    /// <summary>Pauses for an instant to take a snapshot of the disk (the guest's thread writes it), then sends it.</summary>
    public void SendWhileRunning(CancellationToken token)
    {
        if (Disk is not { } disk || Shared) return;
        ctx.Guest.Pause();
        DiskSnapshot snapshot;
        try { snapshot = disk.Snapshot(); }
        finally { ctx.Guest.Resume(); }
        Send(snapshot, token);
    }

    /// <summary>At the pause (stop-and-copy, pre-copy, post-copy): the disk as it is, whatever the destination lacks of it.</summary>
    public void SendAtPause(CancellationToken token)
    {
        if (Disk is not { } disk) return;
        AtPause();
        Send(disk.Snapshot(), token);
    }

    /// <summary>
    /// Post-copy, at the pause: only the list of blocks the destination lacks goes now (as runs in a
    /// <see cref="DiskDone"/> with the identity it must reach); the blocks themselves go after GO, on
    /// request and in the background (<see cref="PostcopyDiskPush"/>, from the returned snapshot).
    /// With shared storage the file is flushed and nothing needs to follow (null).
    /// </summary>
    public (DiskSnapshot Snapshot, long[] Blocks)? SendPostcopy(CancellationToken token)
    {
        if (Disk is not { } disk) return null;
        if (Shared) { SendAtPause(token); return null; }
        var snapshot = disk.Snapshot();
        var hashes = snapshot.BlockHashes;
        var blocks = DiskTransfer.Differing(hashes, _destination);
        if (!_destinationHasDisk) Matched = snapshot.BlockCount - blocks.Count;
        var done = new DiskDone { Identity = Guest.Devices.Virtio.Block.Disk.Identity(hashes), ContentDigest = snapshot.ContentDigest, Postcopy = true };
        for (int i = 0; i < blocks.Count;)
        {
            int j = i + 1;
            while (j < blocks.Count && blocks[j] == blocks[j - 1] + 1) j++;
            done.AbsentFirst.Add((ulong)blocks[i]);
            done.AbsentCount.Add((ulong)(j - i));
            i = j;
        }
        ctx.Conn!.Send(new Envelope { DiskDone = done }, ByteCategory.Disk, token);
        _passes.Add((ulong)blocks.Count);
        _destination = hashes.ToArray();
        _destinationHasDisk = true;
        return (snapshot, blocks.ToArray());
    }

    /// <summary>Rolled back: the guest owns its file again (the blocks held back commit at its next flush).</summary>
    public void ResumeCommits()
    {
        if (!_held || Disk is not { } disk) return;
        disk.CommitsHeld = _held = false;
    }

    public void FillReport(MigrationReport r)
    {
        r.DiskMode = Disk == null ? "none" : Shared ? "shared" : Plan?.Base.Length > 0 ? "base" : "copy";
        r.DiskBlocksSent = (ulong)BlocksSent;
        r.DiskZeroBlocks = (ulong)ZeroBlocks;
        r.DiskBlocksMatched = (ulong)Matched;
        r.DiskBlocksPerPass.AddRange(_passes);
        r.DiskBlocksChangedSinceFirstPass = (ulong)ChangedSinceFirstPass;
    }
}
