using System.IO.Hashing;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.State;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Trace.Compression;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Post-copy, receiving side: CPU and devices are restored and verified before the ACK, the
/// manifest's pages are marked absent; after GO the guest runs at once and an absent page it touches
/// is requested from the source (<see cref="FetchPage"/>, on the guest thread) while this thread
/// applies whatever arrives, each page checked against its manifest hash before it lands. Disk
/// blocks the same way: a virtio-blk request that needs an absent block asks for it (<see cref="FetchBlocks"/>),
/// pushed blocks land as they come (<see cref="DiskArrival.OnPostcopyBlocks"/>). When the
/// link fails the fetcher answers false: the guest stops before the instruction and stays paused
/// until the source resumes post-copy on a new connection (<see cref="TakeOver"/>).
/// </summary>
internal sealed class PostcopyArrival(DestinationContext ctx, PostcopyManifest manifest) : IArrivalStrategy
{
    private static readonly TimeSpan FetchPoll = TimeSpan.FromMilliseconds(50);
    private volatile string? _failure;
    private long _verifiedPages, _requestedPages, _requestedBlocks;
    /// <summary>Stopwatch ticks the guest thread spent waiting for requested pages and blocks (the guest time post-copy costs), and when its current wait began (0: none).</summary>
    private long _waitTicks, _waitingSince;
    private readonly object _waitLock = new();
    private int _manifestPageCount;
    private int _takingOver;
    /// <summary>Set while no thread receives post-copy pages (a resume waits for the old receiver to let go).</summary>
    private readonly ManualResetEventSlim _receiverIdle = new(true);

    /// <summary>Why post-copy stopped before every page arrived (null while fine or when complete).</summary>
    public string? Failure => _failure;
    public long VerifiedPages => Interlocked.Read(ref _verifiedPages);
    public long RequestedPages => Interlocked.Read(ref _requestedPages);
    public bool ServesAfterGo => true;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public string? ReachFinal(FinalState final, out ulong digest)
    {
        digest = 0;
        var machine = ctx.Machine!;
        var memory = machine.Memory;
        List<(int First, int Count)> runs;
        int total;
        try { runs = ManifestPages.Runs(manifest, memory.PageCount, out total); }
        catch (ProtocolException e) { return e.Message; }
        if (manifest.HasPresentRamDigest)
        {
            // After pre-copy: every page not listed must already be exactly the source's.
            var pages = ManifestPages.Expand(manifest, memory.PageCount);
            var skip = new bool[memory.PageCount];
            foreach (int p in pages) skip[p] = true;
            memory.RefreshRamDigest(skip);
            ulong present = memory.RamDigestExcluding(pages);
            if (present != manifest.PresentRamDigest)
                return $"RAM digest mismatch over the pages already here: destination {present:x16}, source {manifest.PresentRamDigest:x16}";
        }
        machine.RestoreDeviceState(new StateReader(final.DeviceState.Memory));
        digest = PostcopySource.DeviceDigest(machine.SaveDeviceState());
        if (machine.Icount != final.Icount || digest != final.Digest)
            return $"device state digest mismatch at icount {final.Icount}: destination has {digest:x16} at {machine.Icount}, source sent {final.Digest:x16}";
        _manifestPageCount = total;
        foreach (var (first, count) in runs) memory.MarkAbsentRange(first, count);
        return null;
    }

    public void AfterAck(FinalState final, ulong digest) =>
        ctx.Host.Log($"'{ctx.Name}' post-copy: device state verified at icount {final.Icount} ({digest:x16}), {_manifestPageCount} pages absent; ACK sent, awaiting GO");

    public void BeforeResume()
    {
        ctx.Machine!.Memory.PageFetcher = FetchPage;
        if (ctx.Machine.Disk is { HasAbsentBlocks: true } disk) disk.BlockFetcher = FetchBlocks;
    }

    public void Stop() { }

    /// <summary>The guest touched an absent page (guest thread): ask the source and wait for it, or give up when the link is gone.</summary>
    private bool FetchPage(int page)
    {
        var memory = ctx.Machine?.Memory;
        var conn = ctx.Conn;
        if (memory == null || _failure != null) return false;
        try { conn.Send(new Envelope { PageRequest = new PageRequest { Page = (uint)page } }); }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            Failed($"cannot request page {page}: {e.Message}", conn);
            return false;
        }
        Interlocked.Increment(ref _requestedPages);
        return AwaitArrival(poll => memory.WaitForPage(page, poll));
    }

    /// <summary>
    /// The guest thread (the only one that fetches) waits, a poll at a time, until what it asked for
    /// arrived, or gives up when the link failed; the wait is timed for <see cref="GuestWait"/>.
    /// </summary>
    private bool AwaitArrival(Func<TimeSpan, bool> arrivedWithin)
    {
        lock (_waitLock) _waitingSince = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            while (!arrivedWithin(FetchPoll))
                if (_failure != null) return false;
            return true;
        }
        finally
        {
            lock (_waitLock)
            {
                _waitTicks += System.Diagnostics.Stopwatch.GetTimestamp() - _waitingSince;
                _waitingSince = 0;
            }
        }
    }

    /// <summary>How long the guest waited for pages and blocks it asked for, a wait still under way included (the last page lands before its waiter wakes).</summary>
    public TimeSpan GuestWait
    {
        get
        {
            lock (_waitLock)
                return System.Diagnostics.Stopwatch.GetElapsedTime(0, _waitTicks + (_waitingSince != 0 ? System.Diagnostics.Stopwatch.GetTimestamp() - _waitingSince : 0));
        }
    }

    /// <summary>A disk request needs absent blocks (guest thread): ask the source for the run and wait, or give up when the link is gone.</summary>
    private bool FetchBlocks(long first, long count)
    {
        var disk = ctx.Machine?.Disk;
        var conn = ctx.Conn;
        if (disk == null || _failure != null) return false;
        try { conn.Send(new Envelope { DiskBlockRequest = new DiskBlockRequest { First = (ulong)first, Count = (ulong)count } }); }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            Failed($"cannot request disk blocks {first}+{count}: {e.Message}", conn);
            return false;
        }
        Interlocked.Add(ref _requestedBlocks, count);
        return AwaitArrival(poll => disk.WaitForBlocks(first, count, poll));
    }

    /// <summary>After GO (and after each resume): applies pushed and requested pages until every manifest page is in, then tells the source.</summary>
    public void ReceivePages()
    {
        var conn = ctx.Conn;
        var memory = ctx.Machine!.Memory;
        int expected = _manifestPageCount;
        var raw = new byte[PageSender.BatchPages * GuestMemory.PageSize];
        ctx.State = DestinationState.Postcopy;
        _receiverIdle.Reset();
        try
        {
            WakeStalledGuest();
            var disk = ctx.Machine.Disk;
            while (Interlocked.Read(ref _verifiedPages) < expected || disk is { AwaitedBlocks: > 0 })
            {
                var e = conn.Receive();
                switch (e.BodyCase)
                {
                    case Envelope.BodyOneofCase.PostcopyPages:
                        ApplyBatch(memory, e.PostcopyPages, raw);
                        WakeStalledGuest();
                        break;
                    case Envelope.BodyOneofCase.DiskBlocks:
                        (ctx.Disk ?? throw new ProtocolException("disk blocks for a guest without a disk")).OnPostcopyBlocks(e.DiskBlocks);
                        WakeStalledGuest();
                        break;
                    case Envelope.BodyOneofCase.Abort:
                        throw new MigrationFailedException($"the source gave up post-copy: {e.Abort.Reason}");
                    default:
                        throw new ProtocolException($"unexpected {e.BodyCase} during post-copy");
                }
            }
            memory.PageFetcher = null;
            if (disk != null) disk.BlockFetcher = null;
            ctx.Disk?.CompletePostcopy(ctx.Owner.Instance);
            lock (ctx.Host.Lock) if (ctx.Entry!.PostcopyIncoming == ctx.Owner) ctx.Entry.PostcopyIncoming = null;
            WakeStalledGuest();
            ctx.WhileStalled();
            ctx.Host.Options.DestinationFault?.Invoke(DestinationFaultPoint.BeforePostcopyDone); // a hook may hold this (a transient stall)
            ctx.State = DestinationState.Running;
            // Complete either way: a source that missed this learns it by asking (ArrivalQuery).
            try { conn.Send(new Envelope { PostcopyDone = new PostcopyDone { VerifiedPages = (ulong)_verifiedPages, VerifiedDiskBlocks = (ulong)(ctx.Disk?.VerifiedPostcopyBlocks ?? 0), GuestWaitSeconds = GuestWait.TotalSeconds } }); }
            catch (IOException e) { ctx.Host.Log($"'{ctx.Name}' post-copy complete, but the source did not hear it ({e.Message}); it will ask"); }
            ctx.Host.Log($"'{ctx.Name}' post-copy complete: {_verifiedPages} pages verified ({_requestedPages} requested by the guest, which waited {GuestWait.TotalMilliseconds:F0} ms for them)" +
                (ctx.Disk is { } d ? $", {d.VerifiedPostcopyBlocks} disk blocks verified ({Interlocked.Read(ref _requestedBlocks)} requested by guest disk requests)" : ""));
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidDataException or ProtocolException or MigrationFailedException)
        {
            Failed(e.Message, conn);
        }
        finally { _receiverIdle.Set(); }
    }

    /// <summary>A guest that stopped on a page the failed link could not bring runs again once pages flow.</summary>
    private void WakeStalledGuest()
    {
        if (ctx.Owner.Instance is { PageStalled: true } g && _failure == null) g.Resume();
    }

    private void ApplyBatch(GuestMemory memory, PageBatch batch, byte[] raw)
    {
        int count = batch.Pages.Count;
        if (count == 0 || count > PageSender.BatchPages) throw new ProtocolException($"post-copy batch of {count} pages");
        int n = Zstd.Decompress(batch.Zstd.Span, raw.AsSpan(0, count * GuestMemory.PageSize));
        if (n != count * GuestMemory.PageSize) throw new ProtocolException($"post-copy batch decompressed to {n} bytes, expected {count * GuestMemory.PageSize}");
        for (int i = 0; i < count; i++)
        {
            int page = (int)batch.Pages[i];
            var data = raw.AsSpan(i * GuestMemory.PageSize, GuestMemory.PageSize);
            if (page >= memory.PageCount || !memory.IsAbsent(page)) throw new ProtocolException($"post-copy page {page} was not awaited (not in the manifest, or sent twice)");
            if (batch.Hashes.Count != count) throw new ProtocolException($"post-copy batch of {count} pages carries {batch.Hashes.Count} hashes");
            ulong want = batch.Hashes[i];
            ulong got = XxHash3.HashToUInt64(data);
            if (got != want)
                throw new MigrationFailedException($"POST-COPY PAGE HASH MISMATCH: page {page} hashes to {got:x16}, the source says {want:x16}; the page is not applied");
            if (!memory.SupplyPage(page, data)) throw new ProtocolException($"post-copy page {page} arrived twice");
            Interlocked.Increment(ref _verifiedPages);
        }
    }

    private void Failed(string why, Connection conn)
    {
        lock (ctx.Lock)
        {
            if (conn != ctx.Conn || _failure != null) return; // an older link, or already failed
            _failure = why;
            ctx.State = DestinationState.PostcopyStalled;
        }
        int absent = ctx.Machine?.Memory.AbsentPageCount ?? 0;
        long blocks = ctx.Machine?.Disk?.AwaitedBlocks ?? 0;
        ctx.Host.Log($"'{ctx.Name}' POST-COPY FAILED: {why}; {absent} pages and {blocks} disk blocks still absent. The guest runs until it touches one, then stays paused until the source resumes post-copy (`lm migrate {ctx.Name} --from {ctx.Setup.Source} --resume`)");
        try { conn.Abort(); } catch (Exception e) when (e is IOException or ObjectDisposedException) { }
    }

    /// <summary>`lm stop` of a post-copy guest whose pages may never come: cut the link; the guest thread stops waiting.</summary>
    public void Abandon(string why)
    {
        Failed(why, ctx.Conn);
        lock (ctx.Lock) ctx.State = DestinationState.Abandoned;
        ctx.Disk?.Abort(); // an image still missing blocks is never put in place: its temporary file goes
    }

    /// <summary>Moves the post-copy onto <paramref name="conn"/>; an old link that still looks alive is cut first.</summary>
    public bool TakeOver(Connection conn, out string? why)
    {
        why = null;
        if (Interlocked.Exchange(ref _takingOver, 1) != 0) { why = "another resume is being accepted"; return false; }
        try
        {
            Failed("superseded by a resume from the source", ctx.Conn); // no-op when it already failed
            if (!_receiverIdle.Wait(TimeSpan.FromSeconds(10))) { why = "the previous post-copy link does not let go"; return false; }
            var memory = ctx.Machine!.Memory;
            var reply = new PostcopyResumeReply { Accepted = true, VerifiedPages = (ulong)Interlocked.Read(ref _verifiedPages) };
            foreach (int page in ManifestPages.Expand(manifest, memory.PageCount))
                if (memory.IsAbsent(page)) reply.AbsentPages.Add((uint)page);
            if (ctx.Machine.Disk is { HasAbsentBlocks: true } disk)
                for (long b = 0; b < disk.BlockCount; b++)
                    if (disk.IsAwaited(b)) reply.AbsentDiskBlocks.Add((ulong)b);
            lock (ctx.Lock)
            {
                ctx.Conn = conn;
                _failure = null;
                ctx.State = DestinationState.Postcopy;
            }
            conn.Send(new Envelope { PostcopyResumeReply = reply });
            ctx.Host.Log($"'{ctx.Name}' post-copy resumed by the source: {reply.AbsentPages.Count} pages and {reply.AbsentDiskBlocks.Count} disk blocks still absent");
            return true;
        }
        finally { Volatile.Write(ref _takingOver, 0); }
    }
}
