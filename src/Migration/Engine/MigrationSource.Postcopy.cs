using System.Collections.Concurrent;
using Google.Protobuf;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.Native;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Post-copy: the guest pauses at once; only CPU and device state plus a manifest of the pages that
/// matter (non-zero, not balloon-free, each with its xxh3) go before the ACK. After GO the destination
/// runs with those pages absent and asks for the ones it touches; this side keeps the paused guest's
/// memory, answers requests first (with a few following pages as pre-paging) and pushes the rest in
/// the background, each page once. The source guest is released only when every page has been sent
/// and the destination confirmed their hashes.
/// </summary>
internal sealed partial class MigrationSource
{
    /// <summary>Pages sent after a requested one (pre-paging: guests tend to walk forward).</summary>
    private const int PrepagePages = 4;
    private const int PushBatchPages = 64;
    private static readonly TimeSpan PostcopyDoneTimeout = TimeSpan.FromSeconds(30);

    private readonly BlockingCollection<int> _pageRequests = new();
    private PostcopyManifest? _manifest;

    /// <summary>The xxh3 of the device state: what post-copy verifies before the ACK (RAM comes later, page by page).</summary>
    internal static ulong DeviceDigest(ReadOnlySpan<byte> deviceState) => XxHash3.Hash(deviceState);

    private (ulong Icount, ulong Digest) PostcopyPrepare(CancellationToken token)
    {
        _phase = "postcopy-switchover";
        Pause();
        var machine = _guest.Machine;
        var memory = machine.Memory;
        var manifest = new PostcopyManifest();
        for (int page = 0; page < memory.PageCount; page++)
        {
            if (machine.Balloon.IsFreePage(page) || memory.IsZeroPage(page)) continue;
            manifest.Pages.Add((uint)page);
            manifest.Hashes.Add(XxHash3.Hash(memory.PageSpan(page)));
        }
        _manifest = manifest;
        _tCheckpointDone = _tLogDone = Now;
        _conn!.Send(new Envelope { PostcopyManifest = manifest }, ByteCategory.State, token);
        Fault(FaultPoint.BeforeAck);
        var devices = machine.SaveDeviceState();
        ulong digest = DeviceDigest(devices);
        var final = new FinalState
        {
            Icount = machine.Icount, DeviceState = ByteString.CopyFrom(devices), Digest = digest,
            Mtime = Math.Max(_guest.Port.Now, machine.Clint.Time), Exited = machine.ExitCode != null,
        };
        _conn.Send(new Envelope { FinalState = final }, ByteCategory.State, token);
        _host.Log($"migration {Id}: post-copy: device state and a manifest of {manifest.Pages.Count} pages sent");
        return (machine.Icount, digest);
    }

    /// <summary>
    /// After GO: sends every manifest page once, requested pages first, and waits for the destination's
    /// <see cref="PostcopyDone"/>. When the link fails the paused source copy is kept.
    /// </summary>
    private void ServePostcopy(MigrationReport report)
    {
        _phase = "postcopy";
        var manifest = _manifest!;
        var memory = _guest.Machine.Memory;
        var index = new Dictionary<int, int>(manifest.Pages.Count);
        for (int i = 0; i < manifest.Pages.Count; i++) index[(int)manifest.Pages[i]] = i;
        var sent = new bool[manifest.Pages.Count];
        int remaining = manifest.Pages.Count, cursor = 0;
        long requested = 0, prepaged = 0, total = 0;
        var raw = new byte[PushBatchPages * GuestMemory.PageSize];
        var compressed = new byte[Zstd.CompressBound(raw.Length)];
        var conn = _conn!;
        double t0 = Now;

        void SendBatch(List<int> slots)
        {
            if (slots.Count == 0) return;
            var batch = new PageBatch();
            for (int i = 0; i < slots.Count; i++)
            {
                int page = (int)manifest.Pages[slots[i]];
                memory.PageSpan(page).CopyTo(raw.AsSpan(i * GuestMemory.PageSize, GuestMemory.PageSize));
                batch.Pages.Add((uint)page);
            }
            int n = Zstd.Compress(raw.AsSpan(0, slots.Count * GuestMemory.PageSize), compressed, PageSender.CompressionLevel);
            batch.Zstd = ByteString.CopyFrom(compressed, 0, n);
            conn.Send(new Envelope { PostcopyPages = batch }, ByteCategory.Postcopy);
            if (total == 0) Fault(FaultPoint.Postcopy);
            total += slots.Count;
        }

        bool Take(int slot, List<int> into)
        {
            if (slot < 0 || slot >= sent.Length || sent[slot]) return false;
            sent[slot] = true;
            remaining--;
            into.Add(slot);
            return true;
        }

        var slots = new List<int>(PushBatchPages);
        try
        {
            string? console = null;
            while (remaining > 0)
            {
                slots.Clear();
                if (_inbox.TryTake(out var early))
                {
                    if (early.BodyCase == Envelope.BodyOneofCase.Resumed) { _tResumed = Now; console = early.Resumed.Console; }
                    else if (early.BodyCase == Envelope.BodyOneofCase.None) throw new IOException($"lost the connection to the destination: {_readerError?.Message}");
                    else if (early.BodyCase == Envelope.BodyOneofCase.Abort) throw new MigrationFailedException($"destination aborted: {early.Abort.Reason}");
                }
                // Requests first; block briefly only when nothing is left to push (never here: remaining > 0).
                while (slots.Count < PushBatchPages && _pageRequests.TryTake(out int page))
                {
                    if (page < 0) throw new IOException($"lost the connection to the destination: {_readerError?.Message}");
                    if (!index.TryGetValue(page, out int slot)) continue; // not in the manifest, or already sent
                    if (!Take(slot, slots)) continue;
                    requested++;
                    for (int k = 1; k <= PrepagePages && slot + k < sent.Length; k++)
                        if (Take(slot + k, slots)) prepaged++;
                }
                if (slots.Count > 0) { SendBatch(slots); continue; }
                // Background push, a small batch at a time so a request never waits long behind it.
                while (slots.Count < PushBatchPages && cursor < sent.Length) Take(cursor++, slots);
                SendBatch(slots);
            }
            _host.Log($"migration {Id}: post-copy: {total} pages sent in {(Now - t0) * 1000:F1} ms ({requested} requested, {prepaged} pre-paged)");
            report.PostcopyPages = (ulong)total;
            report.PostcopyRequestedPages = (ulong)requested;
            report.PostcopyPrepagedPages = (ulong)prepaged;
            if (console == null)
            {
                console = Expect(Envelope.BodyOneofCase.Resumed, ResumedTimeout, CancellationToken.None).Resumed.Console;
                _tResumed = Now;
            }
            report.Console = console;
            var done = Expect(Envelope.BodyOneofCase.PostcopyDone, PostcopyDoneTimeout, CancellationToken.None).PostcopyDone;
            report.PostcopyVerifiedPages = done.VerifiedPages;
            if (done.VerifiedPages != (ulong)manifest.Pages.Count)
                throw new MigrationFailedException($"destination verified {done.VerifiedPages} of {manifest.Pages.Count} post-copy pages");
            report.Success = true;
            _phase = "done";
            _conn?.Dispose();
            _guest.Dispose();
            _host.Log($"migration {Id}: '{_command.Name}' now runs on {_command.Target}; every post-copy page verified there, source copy released");
        }
        catch (Exception e) when (e is IOException or MigrationFailedException or OperationCanceledException)
        {
            report.PostcopyPages = (ulong)total;
            report.PostcopyRequestedPages = (ulong)requested;
            report.PostcopyPrepagedPages = (ulong)prepaged;
            report.Success = false;
            report.Error = $"post-copy interrupted after GO with {remaining} of {manifest.Pages.Count} pages unsent ({e.Message}); " +
                "the destination guest stays paused on a missing page and the paused source copy is kept";
            if (_tResumed < 0) _tResumed = Now;
            _phase = "postcopy-failed";
            _host.Log($"migration {Id}: {report.Error}");
            _conn?.Dispose();
            // Deliberately not disposing _guest: its memory is the only copy of the unsent pages.
            _postcopyOrphan = _guest;
        }
    }

    /// <summary>The paused source guest whose pages a post-copy destination still lacks (a resume would serve them).</summary>
    private GuestInstance? _postcopyOrphan;
}
