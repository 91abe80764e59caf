using LiveMigration.Guest.Memory;
using System.IO.Hashing;
using LiveMigration.Trace.Compression;
using LiveMigration.Guest.State;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Post-copy, receiving side: CPU and devices are restored and verified before the ACK, the
/// manifest's pages are marked absent; after GO the guest runs at once and an absent page it touches
/// is requested from the source (<see cref="FetchPage"/>, on the guest thread) while this thread
/// applies whatever arrives, each page checked against its manifest hash before it lands. When the
/// link fails the fetcher answers false: the guest stops before the instruction and stays paused.
/// </summary>
internal sealed partial class MigrationDestination
{
    private static readonly TimeSpan FetchPoll = TimeSpan.FromMilliseconds(50);
    private PostcopyManifest? _manifest;
    private volatile string? _postcopyFailure;
    private long _verifiedPages, _requestedPages;

    /// <summary>Why post-copy stopped before every page arrived (null while fine or when complete).</summary>
    public string? PostcopyFailure => _postcopyFailure;
    public long PostcopyVerifiedPages => Interlocked.Read(ref _verifiedPages);
    public long PostcopyRequestedPages => Interlocked.Read(ref _requestedPages);

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private bool VerifyPostcopy(FinalState final)
    {
        State = "verifying";
        _final = final;
        var machine = _machine!;
        var memory = machine.Memory;
        string? why = null;
        var manifest = _manifest;
        List<(int First, int Count)> runs = [];
        int total = 0;
        if (manifest == null) why = "post-copy final state without a page manifest";
        else
        {
            try { runs = ManifestPages.Runs(manifest, memory.PageCount, out total); }
            catch (ProtocolException e) { why = e.Message; }
        }
        ulong digest = 0;
        if (why == null && manifest!.HasPresentRamDigest)
        {
            // After pre-copy: every page not listed must already be exactly the source's.
            var pages = ManifestPages.Expand(manifest, memory.PageCount);
            var skip = new bool[memory.PageCount];
            foreach (int p in pages) skip[p] = true;
            memory.RefreshRamDigest(skip);
            ulong present = memory.RamDigestExcluding(pages);
            if (present != manifest.PresentRamDigest)
                why = $"RAM digest mismatch over the pages already here: destination {present:x16}, source {manifest.PresentRamDigest:x16}";
        }
        if (why == null)
        {
            machine.RestoreDeviceState(new StateReader(final.DeviceState.Memory));
            digest = MigrationSource.DeviceDigest(machine.SaveDeviceState());
            if (machine.Icount != final.Icount || digest != final.Digest)
                why = $"device state digest mismatch at icount {final.Icount}: destination has {digest:x16} at {machine.Icount}, source sent {final.Digest:x16}";
        }
        if (why != null)
        {
            try { _conn.Send(new Envelope { Abort = new Abort { Reason = why } }); } catch (IOException) { }
            Discard(why);
            return false;
        }
        _manifestPageCount = total;
        foreach (var (first, count) in runs) memory.MarkAbsentRange(first, count);
        State = "awaiting-go";
        if (_host.Ownership.Coordinated) _record = _host.Ownership.AwaitCommitted(_setup.Name, _setup.Source, _host.Address, _epoch, _host.ShuttingDown); // FLEET
        _conn.Send(new Envelope { Ack = new Ack { Icount = final.Icount, Digest = digest } });
        _host.Log($"'{_setup.Name}' post-copy: device state verified at icount {final.Icount} ({digest:x16}), {total} pages absent; ACK sent, awaiting GO");
        return true;
    }

    private int _manifestPageCount;

    /// <summary>The guest touched an absent page (guest thread): ask the source and wait for it, or give up when the link is gone.</summary>
    private bool FetchPage(int page)
    {
        var memory = _machine?.Memory;
        var conn = _conn;
        if (memory == null || _postcopyFailure != null) return false;
        try { conn.Send(new Envelope { PageRequest = new PageRequest { Page = (uint)page } }); }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            PostcopyFailed($"cannot request page {page}: {e.Message}", conn);
            return false;
        }
        Interlocked.Increment(ref _requestedPages);
        while (!memory.WaitForPage(page, FetchPoll))
            if (_postcopyFailure != null) return false;
        return true;
    }

    /// <summary>Set while no thread receives post-copy pages (a resume waits for the old receiver to let go).</summary>
    private readonly ManualResetEventSlim _receiverIdle = new(true);

    /// <summary>After GO (and after each resume): applies pushed and requested pages until every manifest page is in, then tells the source.</summary>
    private void ReceivePostcopyPages()
    {
        var conn = _conn;
        var machine = _machine!;
        var memory = machine.Memory;
        int expected = _manifestPageCount;
        var raw = new byte[PageSender.BatchPages * GuestMemory.PageSize];
        State = "postcopy";
        _receiverIdle.Reset();
        try
        {
            WakeStalledGuest();
            while (Interlocked.Read(ref _verifiedPages) < expected)
            {
                var e = conn.Receive();
                switch (e.BodyCase)
                {
                    case Envelope.BodyOneofCase.PostcopyPages:
                        ApplyPostcopyBatch(memory, e.PostcopyPages, raw);
                        WakeStalledGuest();
                        break;
                    case Envelope.BodyOneofCase.Abort:
                        throw new MigrationFailedException($"the source gave up post-copy: {e.Abort.Reason}");
                    default:
                        throw new ProtocolException($"unexpected {e.BodyCase} during post-copy");
                }
            }
            memory.PageFetcher = null;
            lock (_host.Lock) if (_entry!.PostcopyIncoming == this) _entry.PostcopyIncoming = null;
            WakeStalledGuest();
            WhileStalled();
            _host.Options.DestinationFault?.Invoke(DestinationFaultPoint.BeforePostcopyDone); // a hook may hold this (a transient stall)
            State = "running";
            // Complete either way: a source that missed this learns it by asking (ArrivalQuery).
            try { conn.Send(new Envelope { PostcopyDone = new PostcopyDone { VerifiedPages = (ulong)_verifiedPages } }); }
            catch (IOException e) { _host.Log($"'{_setup.Name}' post-copy complete, but the source did not hear it ({e.Message}); it will ask"); }
            _host.Log($"'{_setup.Name}' post-copy complete: {_verifiedPages} pages verified ({_requestedPages} requested by the guest)");
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidDataException or ProtocolException or MigrationFailedException)
        {
            PostcopyFailed(e.Message, conn);
        }
        finally { _receiverIdle.Set(); }
    }

    /// <summary>A guest that stopped on a page the failed link could not bring runs again once pages flow.</summary>
    private void WakeStalledGuest()
    {
        if (_instance is { PageStalled: true } g && _postcopyFailure == null) g.Resume();
    }

    private void ApplyPostcopyBatch(GuestMemory memory, PageBatch batch, byte[] raw)
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

    private void PostcopyFailed(string why, Connection conn)
    {
        lock (_lock)
        {
            if (conn != _conn || _postcopyFailure != null) return; // an older link, or already failed
            _postcopyFailure = why;
            State = "postcopy-stalled";
        }
        int absent = _machine?.Memory.AbsentPageCount ?? 0;
        _host.Log($"'{_setup.Name}' POST-COPY FAILED: {why}; {absent} pages still absent. The guest runs until it touches one, then stays paused until the source resumes post-copy (`lm migrate {_setup.Name} --from {_setup.Source} --resume`)");
        try { conn.Abort(); } catch (Exception e) when (e is IOException or ObjectDisposedException) { }
    }

    /// <summary>`lm stop` of a post-copy guest whose pages may never come: cut the link; the guest thread stops waiting.</summary>
    public void AbandonPostcopy(string why)
    {
        PostcopyFailed(why, _conn);
        lock (_lock) State = "abandoned";
    }

    public int PostcopyAbsentPages => _machine?.Memory.AbsentPageCount ?? 0;

    /// <summary>For status: the post-copy phase and how many pages are still missing.</summary>
    public string PostcopyStatus => $"{State}, {_machine?.Memory.AbsentPageCount ?? 0} pages absent";

    /// <summary>
    /// A recovery connection (`lm migrate --resume` on the source) for the post-copy of the guest it
    /// names: answers with the pages still absent and receives them on this thread.
    /// </summary>
    private static void AcceptPostcopyResume(GuestHost host, Connection conn, PostcopyResume resume)
    {
        MigrationDestination? target;
        lock (host.Lock) target = host.Entry(resume.Name)?.PostcopyIncoming;
        string? why = target == null ? $"no post-copy of '{resume.Name}' is in progress on this host"
            : target._setup.MigrationId != resume.MigrationId ? $"'{resume.Name}' arrived here by migration {target._setup.MigrationId}, not {resume.MigrationId}"
            : null;
        if (why != null || !target!.TakeOver(conn, out why))
        {
            conn.Send(new Envelope { PostcopyResumeReply = new PostcopyResumeReply { Accepted = false, Error = why } });
            host.Log($"refused a post-copy resume of '{resume.Name}' (migration {resume.MigrationId}): {why}");
            return;
        }
        target.ReceivePostcopyPages();
    }

    private int _takingOver;

    /// <summary>Moves the post-copy onto <paramref name="conn"/>; an old link that still looks alive is cut first.</summary>
    private bool TakeOver(Connection conn, out string? why)
    {
        why = null;
        if (Interlocked.Exchange(ref _takingOver, 1) != 0) { why = "another resume is being accepted"; return false; }
        try
        {
            var old = _conn;
            PostcopyFailed("superseded by a resume from the source", old); // no-op when it already failed
            if (!_receiverIdle.Wait(TimeSpan.FromSeconds(10))) { why = "the previous post-copy link does not let go"; return false; }
            var memory = _machine!.Memory;
            var reply = new PostcopyResumeReply { Accepted = true, VerifiedPages = (ulong)Interlocked.Read(ref _verifiedPages) };
            foreach (int page in ManifestPages.Expand(_manifest!, memory.PageCount))
                if (memory.IsAbsent(page)) reply.AbsentPages.Add((uint)page);
            lock (_lock)
            {
                _conn = conn;
                _postcopyFailure = null;
                State = "postcopy";
            }
            conn.Send(new Envelope { PostcopyResumeReply = reply });
            _host.Log($"'{_setup.Name}' post-copy resumed by the source: {reply.AbsentPages.Count} pages still absent");
            return true;
        }
        finally { Volatile.Write(ref _takingOver, 0); }
    }
}
