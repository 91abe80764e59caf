using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Migration.Protocol;
using LiveMigration.Recorder.Disk;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The guest's disk, destination side. Without shared storage the blocks arrive into a temporary
/// file next to the target (<see cref="IncomingDiskImage"/>: a copy of the base the destination
/// named, or zeros); at the first <see cref="DiskDone"/> that file becomes the machine's disk and
/// must have the identity the source sent; later blocks (pre-copy's pause) land in the open disk.
/// With shared storage the first DiskDone opens the very file the source flushed, and the disk
/// commits nothing to it before GO (the source still owns the file). At GO the disk flushes and the
/// temporary file is renamed over the target. A discarded migration deletes the temporary file.
/// Post-copy: the DiskDone names the blocks still to come; the disk opens on what is here with
/// those absent, the guest resumes without them, and each arrives after GO (<see cref="OnPostcopyBlocks"/>,
/// checked against its hash). Only when the last one is in and the blocks give the source's identity
/// is the file renamed over the target (<see cref="CompletePostcopy"/>).
/// </summary>
internal sealed class DiskArrival
{
    private readonly DestinationContext _ctx;
    private readonly DiskPlan _plan;
    private readonly DiskIdentity _identity;
    private IncomingDiskImage? _image;
    private Microsoft.Win32.SafeHandles.SafeFileHandle? _shared; // the shared file, opened when checked
    private Disk? _disk;
    private ulong[]? _heldHashes;   // the block hashes of what the temporary image starts as (its base's, or zeros)
    private ulong[]? _pauseHashes;  // post-copy: the source's disk at the pause, as far as it has arrived
    private DiskDone? _postcopy;
    private long _verified;

    private DiskArrival(DestinationContext ctx, DiskPlan plan, DiskIdentity identity)
    {
        _ctx = ctx;
        _plan = plan;
        _identity = identity;
    }

    /// <summary>True once the machine has its disk.</summary>
    public bool Ready => _disk != null;
    /// <summary>Post-copy disk blocks that arrived with their hash matching.</summary>
    public long VerifiedPostcopyBlocks => Interlocked.Read(ref _verified);
    /// <summary>Post-copy disk blocks not arrived yet.</summary>
    public long AwaitedBlocks => _disk?.AwaitedBlocks ?? 0;
    public string Path => _plan.Path;

    /// <summary>
    /// Checks the source's disk against what this host holds, before anything moves; null when it
    /// needs no disk. Throws <see cref="MigrationFailedException"/> with the one-line reason to refuse.
    /// </summary>
    public static DiskArrival? Prepare(DestinationContext ctx, MigrateSetup setup, out DiskBase? held)
    {
        held = null;
        var identity = setup.Machine?.Disk;
        bool hasBlock = ((VirtioDevices)(setup.Machine?.VirtioDevices ?? 0) & VirtioDevices.Block) != 0;
        if (identity == null)
        {
            if (hasBlock) throw new MigrationFailedException("disk mismatch: the source's machine has virtio-blk but sent no disk identity");
            return null;
        }
        if (!hasBlock) throw new MigrationFailedException("disk mismatch: the source sent a disk identity for a machine without virtio-blk");
        if (Disk.LengthProblem((long)Math.Min(identity.Length, long.MaxValue)) is { } problem) throw new MigrationFailedException($"disk mismatch: the source's disk: {problem}");
        var named = setup.Disk ?? throw new MigrationFailedException("the source named no place for the guest's disk on this host");
        // Nothing is opened, read or written before both paths are known to be under the disk directory;
        // from here every file is opened in the directories that check opened (no link is walked after it).
        string? root = DiskPaths.Root(ctx.Host.Options);
        var target = DiskPaths.Confine(root, named.Path, "disk path");
        ConfinedPath? confinedBase = null;
        IncomingDiskImage? arrivalImage = null;
        try
        {
            confinedBase = named.Base.Length > 0 ? DiskPaths.Confine(root, named.Base, "disk base") : null;
            var plan = new DiskPlan(named) { Path = target.Path, Base = confinedBase?.Path ?? "" };
            long length = (long)identity.Length;
            var arrival = new DiskArrival(ctx, plan, identity);
            if (plan.Shared)
            {
                if (!target.IsFile()) throw new MigrationFailedException($"shared disk {plan.Path} does not exist on this host");
                var handle = target.Open(writable: !identity.ReadOnly);
                long n = RandomAccess.GetLength(handle);
                if (n != length)
                {
                    handle.Dispose();
                    throw new MigrationFailedException($"disk mismatch: the source's disk is {length} bytes, the shared file {plan.Path} here is {n} bytes");
                }
                arrival._shared = handle;
                return arrival;
            }
            if (confinedBase != null)
            {
                if (!confinedBase.IsFile()) throw new MigrationFailedException($"disk base {confinedBase.Path} does not exist on this host");
                var backing = FileDiskBacking.Open(confinedBase.Open(writable: false), confinedBase.Path, writable: false);
                if (backing.Length != length)
                {
                    backing.Dispose();
                    throw new MigrationFailedException($"disk mismatch: the source's disk is {length} bytes, the base {confinedBase.Path} here is {backing.Length} bytes");
                }
                using var baseDisk = Disk.Open(backing, readOnly: true);
                held = DiskTransfer.DescribeBase(confinedBase.Path, baseDisk);
                arrival._heldHashes = [.. held.BlockHashes];
            }
            else
            {
                arrival._heldHashes = new ulong[length / Disk.BlockSize];
                Array.Fill(arrival._heldHashes, Disk.ZeroBlockHash);
            }
            arrival._image = arrivalImage = IncomingDiskImage.Begin(target, confinedBase, length); // takes the target
            return arrival;
        }
        finally
        {
            confinedBase?.Dispose();
            if (arrivalImage == null) target.Dispose();
        }
    }

    /// <summary>Blocks of the disk (under the destination's lock): into the temporary file, or the open disk.</summary>
    public void OnBlocks(DiskBlocks blocks)
    {
        if (_disk != null) DiskTransfer.Apply(blocks, _disk);
        else if (_image != null) DiskTransfer.Apply(blocks, _image.Backing);
        else throw new ProtocolException("disk blocks for a shared disk");
    }

    /// <summary>The blocks up to here are in: the first time, the machine gets its disk; every time, it must have the source's identity.</summary>
    public void OnDone(DiskDone done)
    {
        if (done.Postcopy) { OnPostcopyDone(done); return; }
        if (_disk == null)
        {
            if (done.Shared != _plan.Shared) throw new ProtocolException(done.Shared ? "a shared-disk DiskDone for a copied disk" : "a copied-disk DiskDone for a shared disk");
            Disk disk;
            if (_plan.Shared)
            {
                var backing = FileDiskBacking.Open(_shared!, _plan.Path, writable: !_identity.ReadOnly);
                _shared = null;
                try { disk = Disk.Open(backing, _identity.ReadOnly); }
                catch { backing.Dispose(); throw; }
            }
            else
            {
                _image!.Backing.Sync(); // now, not at GO: the fsync of what arrived stays out of the downtime
                disk = _image.OpenDisk(_identity.ReadOnly);
            }
            // A shared file is the source's until GO: nothing reaches it from here before. The temporary
            // image is ours: the replay's flushes commit into it, leaving GO only the unflushed tail.
            disk.CommitsHeld = _plan.Shared;
            if (disk.CurrentIdentity() != done.Identity || disk.ContentDigest != done.ContentDigest)
            {
                ulong mine = disk.CurrentIdentity();
                disk.Dispose();
                throw new MigrationFailedException(_plan.Shared
                    ? $"the shared disk {_plan.Path} here is image 0x{mine:x16}, not the source's 0x{done.Identity:x16} (not the same file?)"
                    : $"the disk assembled here is image 0x{mine:x16}, not the source's 0x{done.Identity:x16}");
            }
            _ctx.Machine!.InsertDisk(disk);
            _disk = disk;
            _ctx.Host.Log($"'{_ctx.Name}': disk {(_plan.Shared ? "shared file" : "assembled")} at {_plan.Path}, image 0x{done.Identity:x16} verified");
            return;
        }
        if (_disk.ContentDigest != done.ContentDigest || _disk.CurrentIdentity() != done.Identity)
            throw new MigrationFailedException($"the disk here is image 0x{_disk.CurrentIdentity():x16} after the source's blocks, not the source's 0x{done.Identity:x16}");
        // Pre-copy's rounds: what arrived goes to the temporary image now, not in GO's flush (downtime).
        if (!_plan.Shared) _disk.Flush();
    }

    /// <summary>
    /// Post-copy, before the final state: the disk is what this host holds (or what earlier passes
    /// brought) with the listed blocks absent; nothing is read or hashed here (it is downtime).
    /// </summary>
    private void OnPostcopyDone(DiskDone done)
    {
        if (_plan.Shared || _postcopy != null) throw new ProtocolException(_plan.Shared ? "a post-copy DiskDone for a shared disk" : "a second post-copy DiskDone");
        if (done.AbsentFirst.Count != done.AbsentCount.Count) throw new ProtocolException("post-copy DiskDone with mismatched run lists");
        long blocks = (long)(_identity.Length / Disk.BlockSize), previousEnd = 0;
        var absent = new List<long>();
        for (int i = 0; i < done.AbsentFirst.Count; i++)
        {
            ulong first = done.AbsentFirst[i], count = done.AbsentCount[i];
            if (count == 0 || first < (ulong)previousEnd || first > (ulong)blocks || count > (ulong)blocks - first)
                throw new ProtocolException($"post-copy disk run {first}+{count} is out of order or beyond the end of the disk ({blocks} blocks)");
            for (ulong b = first; b < first + count; b++) absent.Add((long)b);
            previousEnd = (long)(first + count);
        }
        if (_disk == null)
        {
            var disk = _image!.OpenDisk(_identity.ReadOnly, _heldHashes!);
            _ctx.Machine!.InsertDisk(disk);
            _disk = disk;
        }
        _pauseHashes = _disk.BlockHashes.ToArray();
        _disk.MarkAbsent(absent);
        _postcopy = done;
        _ctx.Host.Log($"'{_ctx.Name}': disk at {_plan.Path} opens with {absent.Count} of {blocks} blocks to come after GO (post-copy)");
    }

    /// <summary>Post-copy blocks after GO (receiver thread): each checked against its hash, then handed to the running disk.</summary>
    public void OnPostcopyBlocks(DiskBlocks message)
    {
        if (_postcopy == null || _disk is not { } disk) throw new ProtocolException("post-copy disk blocks without a post-copy disk");
        DiskTransfer.Apply(message, disk.BlockCount, (b, data) =>
        {
            ulong hash = System.IO.Hashing.XxHash3.HashToUInt64(data);
            if (!disk.SupplyBlock(b, data)) throw new ProtocolException($"post-copy disk block {b} was not awaited (not listed, or sent twice)");
            _pauseHashes![b] = hash;
            Interlocked.Increment(ref _verified);
        });
    }

    /// <summary>
    /// Every post-copy block is in: the blocks must give the identity the source had at the pause;
    /// then what the guest wrote is committed and the image takes the target's name.
    /// </summary>
    public void CompletePostcopy(Hosting.GuestInstance? instance)
    {
        if (_postcopy is not { } done || _disk is not { } disk) return;
        if (disk.AwaitedBlocks != 0) throw new InvalidOperationException("post-copy disk completed with blocks still awaited");
        ulong identity = Disk.Identity(_pauseHashes), content = Disk.ContentDigestOf(_pauseHashes);
        if (identity != done.Identity || content != done.ContentDigest)
            throw new MigrationFailedException($"POST-COPY DISK MISMATCH: the blocks here give image 0x{identity:x16}, the source's at the pause was 0x{done.Identity:x16}; the image is not put in place");
        disk.Flush();
        _image?.Commit();
        _image = null;
        if (instance != null) instance.DrivePath = _plan.Path;
        _ctx.Host.Log($"'{_ctx.Name}': every post-copy disk block arrived ({_verified} verified), image 0x{identity:x16} as the source's at the pause; the image is in place at {_plan.Path}");
    }

    /// <summary>Log shipping fell back: the disk returns to C0 with the rest of the machine.</summary>
    public int RevertTo(DiskSnapshot c0) => _disk?.RevertTo(c0) ?? 0;

    /// <summary>GO, before the guest runs: the disk commits what it holds and the image takes the target's name.</summary>
    public void Commit(Hosting.GuestInstance instance)
    {
        if (_disk == null) throw new MigrationFailedException("GO before the guest's disk arrived");
        _disk.CommitsHeld = false;
        _disk.Flush();
        if (_disk.HasAbsentBlocks) return; // post-copy: the image goes in place when its last block arrived
        _image?.Commit();
        _image = null;
        instance.DrivePath = _plan.Path;
    }

    /// <summary>The incoming copy is discarded: the temporary image goes (the machine's owner disposes the disk).</summary>
    public void Abort()
    {
        _shared?.Dispose();
        _shared = null;
        _image?.Abort();
        _image = null;
    }
}
