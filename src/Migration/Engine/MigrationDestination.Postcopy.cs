using LiveMigration.Guest.Memory;
using LiveMigration.Guest.Native;
using LiveMigration.Guest.State;
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
    private Dictionary<int, ulong>? _pageHashes;
    private volatile string? _postcopyFailure;
    private long _verifiedPages, _requestedPages;

    /// <summary>Why post-copy stopped before every page arrived (null while fine or when complete).</summary>
    public string? PostcopyFailure => _postcopyFailure;
    public long PostcopyVerifiedPages => Interlocked.Read(ref _verifiedPages);
    public long PostcopyRequestedPages => Interlocked.Read(ref _requestedPages);

    private bool VerifyPostcopy(FinalState final)
    {
        State = "verifying";
        _final = final;
        var machine = _machine!;
        string? why = null;
        var manifest = _manifest;
        if (manifest == null) why = "post-copy final state without a page manifest";
        else if (manifest.Pages.Count != manifest.Hashes.Count) why = "post-copy manifest with mismatched lists";
        else if (manifest.Pages.Any(p => p >= machine.Memory.PageCount)) why = "post-copy manifest names a page beyond the end of memory";
        ulong digest = 0;
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
        _pageHashes = new Dictionary<int, ulong>(manifest!.Pages.Count);
        for (int i = 0; i < manifest.Pages.Count; i++) _pageHashes[(int)manifest.Pages[i]] = manifest.Hashes[i];
        machine.Memory.MarkAbsent(_pageHashes.Keys);
        State = "awaiting-go";
        _conn.Send(new Envelope { Ack = new Ack { Icount = final.Icount, Digest = digest } });
        _host.Log($"'{_setup.Name}' post-copy: device state verified at icount {final.Icount} ({digest:x16}), {manifest.Pages.Count} pages absent; ACK sent, awaiting GO");
        return true;
    }

    /// <summary>The guest touched an absent page (guest thread): ask the source and wait for it, or give up when the link is gone.</summary>
    private bool FetchPage(int page)
    {
        var memory = _machine?.Memory;
        if (memory == null || _postcopyFailure != null) return false;
        try { _conn.Send(new Envelope { PageRequest = new PageRequest { Page = (uint)page } }); }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            PostcopyFailed($"cannot request page {page}: {e.Message}");
            return false;
        }
        Interlocked.Increment(ref _requestedPages);
        while (!memory.WaitForPage(page, FetchPoll))
            if (_postcopyFailure != null) return false;
        return true;
    }

    /// <summary>After GO: applies pushed and requested pages until every manifest page is in, then tells the source.</summary>
    private void ReceivePostcopyPages()
    {
        var machine = _machine!;
        var memory = machine.Memory;
        var hashes = _pageHashes!;
        int expected = hashes.Count;
        var raw = new byte[PageSender.BatchPages * GuestMemory.PageSize];
        State = "postcopy";
        try
        {
            while (Interlocked.Read(ref _verifiedPages) < expected)
            {
                var e = _conn.Receive();
                switch (e.BodyCase)
                {
                    case Envelope.BodyOneofCase.PostcopyPages:
                        ApplyPostcopyBatch(memory, hashes, e.PostcopyPages, raw);
                        break;
                    case Envelope.BodyOneofCase.Abort:
                        throw new MigrationFailedException($"the source gave up post-copy: {e.Abort.Reason}");
                    default:
                        throw new ProtocolException($"unexpected {e.BodyCase} during post-copy");
                }
            }
            memory.PageFetcher = null;
            _conn.Send(new Envelope { PostcopyDone = new PostcopyDone { VerifiedPages = (ulong)_verifiedPages } });
            State = "running";
            _host.Log($"'{_setup.Name}' post-copy complete: {_verifiedPages} pages verified ({_requestedPages} requested by the guest)");
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidDataException or ProtocolException or MigrationFailedException)
        {
            PostcopyFailed(e.Message);
        }
    }

    private void ApplyPostcopyBatch(GuestMemory memory, Dictionary<int, ulong> hashes, PageBatch batch, byte[] raw)
    {
        int count = batch.Pages.Count;
        if (count == 0 || count > PageSender.BatchPages) throw new ProtocolException($"post-copy batch of {count} pages");
        int n = Zstd.Decompress(batch.Zstd.Span, raw.AsSpan(0, count * GuestMemory.PageSize));
        if (n != count * GuestMemory.PageSize) throw new ProtocolException($"post-copy batch decompressed to {n} bytes, expected {count * GuestMemory.PageSize}");
        for (int i = 0; i < count; i++)
        {
            int page = (int)batch.Pages[i];
            var data = raw.AsSpan(i * GuestMemory.PageSize, GuestMemory.PageSize);
            if (!hashes.TryGetValue(page, out ulong want)) throw new ProtocolException($"post-copy page {page} is not in the manifest");
            ulong got = XxHash3.Hash(data);
            if (got != want)
                throw new MigrationFailedException($"POST-COPY PAGE HASH MISMATCH: page {page} hashes to {got:x16}, the manifest says {want:x16}; the page is not applied");
            if (!memory.SupplyPage(page, data)) throw new ProtocolException($"post-copy page {page} arrived twice");
            Interlocked.Increment(ref _verifiedPages);
        }
    }

    private void PostcopyFailed(string why)
    {
        if (_postcopyFailure != null) return;
        _postcopyFailure = why;
        State = "postcopy-stalled";
        int absent = _machine?.Memory.AbsentPageCount ?? 0;
        _host.Log($"'{_setup.Name}' POST-COPY FAILED: {why}; {absent} pages still absent. The guest runs until it touches one, then stays paused (it cannot run on without the source's pages)");
        try { _conn.Dispose(); } catch (Exception e) when (e is IOException or ObjectDisposedException) { }
    }
}
