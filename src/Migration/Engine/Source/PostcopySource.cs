using System.IO.Hashing;
using System.Runtime.CompilerServices;
using Google.Protobuf;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Post-copy: the guest pauses at once; only CPU and device state plus a manifest of the pages that
/// matter (non-zero, not balloon-free) go before the ACK. After GO the destination runs with those
/// pages absent and asks for the ones it touches; this side keeps the paused guest's memory,
/// answers requests first (with a few following pages as pre-paging) and pushes the rest in the
/// background, each page once (<see cref="PostcopyPush"/>). The disk goes the same way: only the
/// list of blocks the destination lacks before the ACK, the blocks themselves after GO, on request
/// and pushed (<see cref="PostcopyDiskPush"/>). The source guest is released only when every page
/// and block has been sent and the destination confirmed their hashes; a broken link holds it for
/// `lm migrate --resume` (<see cref="ResumeAfterFailure"/>).
/// </summary>
internal sealed class PostcopySource(SourceContext ctx, SourceSwitchover switchover) : ISourceStrategy
{
    private PostcopyManifest? _manifest;
    private int[] _manifestPages = [];
    private volatile PostcopyPush? _push;
    private (Guest.Devices.Virtio.Block.DiskSnapshot Snapshot, long[] Blocks)? _disk;

    /// <summary>The xxh3 of the device state: what post-copy verifies before the ACK (RAM comes later, page by page).</summary>
    internal static ulong DeviceDigest(ReadOnlySpan<byte> deviceState) => XxHash3.HashToUInt64(deviceState);

    /// <summary>Post-copy chosen: pause now, every page ever written goes after GO.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public SwitchoverPoint Run(CancellationToken token)
    {
        ctx.Phase = MigrationPhase.PostcopySwitchover;
        switchover.Pause();
        var machine = ctx.Guest.Machine;
        var memory = machine.Memory;
        // Nothing is read or hashed in the downtime: every page ever written goes (a zero one costs a
        // few bytes compressed), and each page is hashed as it is sent.
        var manifest = new PostcopyManifest();
        var balloon = machine.Balloon;
        foreach (var (first, count) in memory.TouchedRuns())
        {
            if (balloon.FreePageCount == 0) { ManifestPages.AddRun(manifest, first, count); continue; }
            int start = first; // free pages split the run
            for (int page = first; page <= first + count; page++)
            {
                if (page < first + count && !balloon.IsFreePage(page)) continue;
                if (page > start) ManifestPages.AddRun(manifest, start, page - start);
                start = page + 1;
            }
        }
        ctx.Times.CheckpointDone = ctx.Times.LogDone = ctx.Now;
        return SendState(manifest, token);
    }

    /// <summary>
    /// Auto's last resort, with the guest paused after pre-copy gave up: the pages still dirty go
    /// post-copy (zero and free ones as markers now). The destination holds every other page from the
    /// rounds; the RAM digest over those (<see cref="PostcopyManifest.PresentRamDigest"/>) verifies
    /// them before the ACK, and each post-copy page is verified against its hash on arrival.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public SwitchoverPoint AfterPrecopy(List<int> dirty, PrecopyPageEncoder sender, CancellationToken token)
    {
        ctx.Phase = MigrationPhase.PostcopySwitchover;
        var machine = ctx.Guest.Machine;
        var memory = machine.Memory;
        var listed = new List<int>(dirty.Count);
        var skip = new bool[memory.PageCount];
        dirty.Sort();
        foreach (int page in dirty)
        {
            if (machine.Balloon.IsFreePage(page) || memory.IsUntouched(page)) { sender.Send(page, null); continue; }
            listed.Add(page);
            skip[page] = true;
        }
        sender.Flush();
        memory.RefreshRamDigest(skip); // the listed pages are not hashed now (they are hashed as they are sent)
        var manifest = new PostcopyManifest { PresentRamDigest = memory.RamDigestExcluding(listed) };
        ManifestPages.AddRuns(manifest, listed);
        return SendState(manifest, token);
    }

    /// <summary>Manifest, then CPU and device state; the ACK will carry the device digest.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private SwitchoverPoint SendState(PostcopyManifest manifest, CancellationToken token)
    {
        var machine = ctx.Guest.Machine;
        _manifest = manifest;
        switchover.Held.Postcopy = this;
        _disk = ctx.DiskSender.SendPostcopy(token); // which blocks are missing; they follow after GO
        ctx.Conn!.Send(new Envelope { PostcopyManifest = manifest }, ByteCategory.State, token);
        ctx.Fault(FaultPoint.BeforeAck);
        var devices = machine.SaveDeviceState();
        ulong digest = DeviceDigest(devices);
        ctx.Conn.Send(new Envelope { FinalState = switchover.FinalStateOf(digest, devices) }, ByteCategory.State, token);
        ctx.Log($"post-copy: device state and a manifest of {manifest.RunFirst.Count} page runs sent");
        return new SwitchoverPoint(machine.Icount, digest, this);
    }

    /// <summary>
    /// After GO: sends every manifest page once, requested pages first, and waits for the destination's
    /// <see cref="PostcopyDone"/>. When the link fails the paused source copy is held for `lm migrate --resume`.
    /// </summary>
    public void Serve(MigrationReport report)
    {
        ctx.Phase = MigrationPhase.Postcopy;
        EnsureManifestPages(); // after GO: not downtime
        var push = _push = new PostcopyPush(ctx, _manifestPages, new bool[_manifestPages.Length], DiskPush(null));
        try
        {
            // The destination asks for nothing before it resumes: pushing now would only compete with
            // its resume for the cores. Its requests queue meanwhile and go first.
            var resumed = ctx.ReturnPath.Expect(Envelope.BodyOneofCase.Resumed, ctx.Host.Options.ResumeConfirmTimeout, CancellationToken.None).Resumed;
            switchover.OnResumed(resumed);
            report.Console = resumed.Console;
            push.Run(ctx.Conn!);
            Finish(report, push);
        }
        catch (Exception e) when (e is IOException or MigrationFailedException or OperationCanceledException)
        {
            push.FillReport(report);
            HoldForResume(report, push, e);
        }
    }

    /// <summary>Waits for the destination's confirmation of every page, then releases the source copy.</summary>
    private void Finish(MigrationReport report, PostcopyPush push)
    {
        push.FillReport(report);
        var done = ctx.ReturnPath.Expect(Envelope.BodyOneofCase.PostcopyDone, ctx.Host.Options.PostcopyDoneTimeout, CancellationToken.None).PostcopyDone;
        report.PostcopyVerifiedPages = done.VerifiedPages;
        report.PostcopyVerifiedDiskBlocks = done.VerifiedDiskBlocks;
        report.PostcopyGuestWaitSeconds = done.GuestWaitSeconds;
        if (done.VerifiedPages != (ulong)_manifestPages.Length)
            throw new MigrationFailedException($"destination verified {done.VerifiedPages} of {_manifestPages.Length} post-copy pages");
        long blocks = _disk?.Blocks.LongLength ?? 0;
        if (done.VerifiedDiskBlocks != (ulong)blocks)
            throw new MigrationFailedException($"destination verified {done.VerifiedDiskBlocks} of {blocks} post-copy disk blocks");
        report.PostcopyDoneSeconds = ctx.Now;
        report.Success = true;
        switchover.Held.Stop();
        switchover.ReleaseCopy($"'{ctx.Command.Name}' now runs on {ctx.Target}; every post-copy page{(blocks > 0 ? " and disk block" : "")} verified there, source copy released");
    }

    public void HoldForResume(MigrationReport report, PostcopyPush? push, Exception e)
    {
        EnsureManifestPages();
        if (ctx.Times.Resumed < 0) ctx.Times.Resumed = ctx.Now;
        report.Success = false;
        report.Error = $"post-copy interrupted after GO with {push?.Remaining ?? _manifestPages.Length} of {_manifestPages.Length} pages unsent ({e.Message}); " +
            $"the destination guest stays paused on a missing page and the paused source copy is held: recover with `lm migrate {ctx.Command.Name} --from {ctx.Host.Address} --resume`";
        ctx.Phase = MigrationPhase.PostcopyInterrupted;
        ctx.Log(report.Error);
        ctx.Conn?.Dispose();
        // Deliberately not disposing the guest: its memory is the only copy of the unsent pages. The
        // watcher lets it go if the destination turns out to have them all (a transient stall).
        switchover.Held.Start();
    }

    /// <summary>
    /// `lm migrate NAME --resume` (QEMU's migrate-recover): a fresh connection to the destination,
    /// which answers with the manifest pages it still lacks; exactly those go (requested ones first),
    /// and the held source copy is released once the destination confirms every page. A failed
    /// resume keeps holding it, so it can be tried again.
    /// </summary>
    public MigrationReport ResumeAfterFailure(MigrateCommand command, Action<MigrationProgress>? progress)
    {
        var held = switchover.Held;
        if (!held.TryBeginResume()) throw new HostException($"a resume of '{ctx.Command.Name}' is already in progress");
        string target = string.IsNullOrEmpty(command.Target) ? ctx.Target : command.Target;
        string name = ctx.Command.Name;
        var report = new MigrationReport
        {
            Name = name, Strategy = Strategy.Postcopy, Source = ctx.Host.Address, Destination = target, MigrationId = ctx.Id,
            MemorySize = ctx.Guest.Machine.Config.MemorySize, ResumedPostcopy = true,
        };
        double t0 = ctx.Now;
        ctx.ReturnPath.Reset();
        ctx.Phase = MigrationPhase.PostcopyResume;
        PostcopyPush? push = null;
        using (new ProgressReporter(ctx.Owner, progress))
        {
            try
            {
                ctx.Log($"resuming post-copy of '{name}' to {target}");
                var conn = ctx.Host.Connect(target);
                ctx.Conn = conn;
                conn.ClientHandshake(Purpose.Migrate);
                if (command.BandwidthBytesPerSecond > 0) conn.Limiter = new TokenBucket((long)command.BandwidthBytesPerSecond);
                conn.Send(new Envelope { PostcopyResume = new PostcopyResume { MigrationId = ctx.Id, Name = name } });
                ctx.ReturnPath.Start(conn, $"migrate-{ctx.Id}-rx");
                var reply = ctx.ReturnPath.Expect(Envelope.BodyOneofCase.PostcopyResumeReply, TimeSpan.FromSeconds(10), CancellationToken.None).PostcopyResumeReply;
                if (!reply.Accepted)
                {
                    if (held.QueryArrival() is { State: ArrivalState.ArrivalResumed } && held.Stop())
                    {
                        // It got every page after all (the link failed after the last one): nothing to resume.
                        report.Success = true;
                        switchover.ReleaseCopy($"{target} already has every post-copy page of '{name}'; the held copy is released");
                        return report;
                    }
                    throw new MigrationFailedException($"the destination refused the resume: {reply.Error}");
                }
                var sent = new bool[_manifestPages.Length];
                Array.Fill(sent, true);
                var slotOf = PostcopyPush.SlotIndex(_manifestPages);
                foreach (uint page in reply.AbsentPages)
                {
                    if (!slotOf.TryGetValue((int)page, out int slot)) throw new MigrationFailedException($"the destination lacks page {page}, which is not in the manifest");
                    sent[slot] = false;
                }
                ctx.Phase = MigrationPhase.Postcopy;
                ctx.Log($"the destination lacks {reply.AbsentPages.Count} of {sent.Length} pages ({reply.VerifiedPages} verified before the link failed)" +
                    (_disk != null ? $" and {reply.AbsentDiskBlocks.Count} of {_disk.Value.Blocks.Length} disk blocks" : ""));
                push = _push = new PostcopyPush(ctx, _manifestPages, sent, DiskPush(reply.AbsentDiskBlocks));
                push.Run(conn);
                ctx.Target = target;
                Finish(report, push);
                lock (ctx.Host.Lock) ctx.Entry.MovedTo = target;
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or MigrationFailedException or ProtocolException or OperationCanceledException)
            {
                push?.FillReport(report);
                report.Success = false;
                report.Error = $"resume failed: {e.Message}; the source copy is still held, try `lm migrate {name} --from {ctx.Host.Address} --resume` again";
                ctx.Phase = MigrationPhase.PostcopyInterrupted;
                ctx.Log(report.Error);
                ctx.Conn?.Dispose();
            }
            finally { held.EndResume(); }
        }
        report.TotalSeconds = ctx.Now - t0;
        if (ctx.Conn is { } c) report.BytesPostcopy = (ulong)c.Sent(ByteCategory.Postcopy);
        report.BytesProtocol = (ulong)(ctx.Conn?.Sent(ByteCategory.Protocol) ?? 0);
        return report;
    }

    /// <summary>The disk blocks to send: all of them, or after a resume those the destination still lacks.</summary>
    private PostcopyDiskPush? DiskPush(IEnumerable<ulong>? absent)
    {
        if (_disk is not { } d) return null;
        var sent = absent == null ? new bool[d.Blocks.Length] : PostcopyDiskPush.SentExcept(d.Blocks, absent);
        return new PostcopyDiskPush(ctx, d.Snapshot, d.Blocks, sent);
    }

    private void EnsureManifestPages()
    {
        if (_manifestPages.Length == 0 && _manifest != null) _manifestPages = ManifestPages.Expand(_manifest, ctx.Guest.Machine.Memory.PageCount);
    }

    public void FillReport(MigrationReport report) { }

    public void FillProgress(MigrationProgress p)
    {
        if (ctx.Phase is not (MigrationPhase.PostcopySwitchover or MigrationPhase.Postcopy or MigrationPhase.PostcopyResume or MigrationPhase.PostcopyInterrupted)) return;
        p.PagesSent = (uint)(_push?.Sent ?? 0);
        p.PagesTotal = (uint)(_push?.ToSend ?? 0);
    }

    public void Release() { }
}
