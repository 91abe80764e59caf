using System.Collections.Concurrent;
using Google.Protobuf;
using LiveMigration.Guest.Memory;
using System.IO.Hashing;
using LiveMigration.Trace.Compression;
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
    private TimeSpan PostcopyDoneTimeout => _host.Options.PostcopyDoneTimeout;

    private readonly BlockingCollection<int> _pageRequests = new();
    private PostcopyManifest? _manifest;
    private int[] _manifestPages = [];

    /// <summary>The xxh3 of the device state: what post-copy verifies before the ACK (RAM comes later, page by page).</summary>
    internal static ulong DeviceDigest(ReadOnlySpan<byte> deviceState) => XxHash3.HashToUInt64(deviceState);

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private (ulong Icount, ulong Digest) PostcopyPrepare(CancellationToken token)
    {
        _phase = MigrationPhase.PostcopySwitchover;
        Pause();
        var machine = _guest.Machine;
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
        _tCheckpointDone = _tLogDone = Now;
        return SendPostcopyState(manifest, token);
    }

    /// <summary>
    /// Auto's last resort, with the guest paused after pre-copy gave up: the pages still dirty go
    /// post-copy (zero and free ones as markers now). The destination holds every other page from the
    /// rounds; the RAM digest over those (<see cref="PostcopyManifest.PresentRamDigest"/>) verifies
    /// them before the ACK, and each post-copy page is verified against its hash on arrival.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private (ulong Icount, ulong Digest) PostcopyAfterPrecopy(List<int> dirty, PrecopyPageEncoder sender, CancellationToken token)
    {
        _phase = MigrationPhase.PostcopySwitchover;
        var machine = _guest.Machine;
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
        return SendPostcopyState(manifest, token);
    }

    /// <summary>Manifest, then CPU and device state; the ACK will carry the device digest.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private (ulong Icount, ulong Digest) SendPostcopyState(PostcopyManifest manifest, CancellationToken token)
    {
        var machine = _guest.Machine;
        _manifest = manifest;
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
        _host.Log($"migration {Id}: post-copy: device state and a manifest of {manifest.RunFirst.Count} page runs sent");
        return (machine.Icount, digest);
    }

    /// <summary>
    /// After GO: sends every manifest page once, requested pages first, and waits for the destination's
    /// <see cref="PostcopyDone"/>. When the link fails the paused source copy is held for `lm migrate --resume`.
    /// </summary>
    private void ServePostcopy(MigrationReport report)
    {
        _phase = MigrationPhase.Postcopy;
        EnsureManifestPages(); // after GO: not downtime
        var push = new PostcopyPush(this, new bool[_manifestPages.Length]);
        try
        {
            // The destination asks for nothing before it resumes: pushing now would only compete with
            // its resume for the cores. Its requests queue meanwhile and go first.
            var resumed = Expect(Envelope.BodyOneofCase.Resumed, ResumedTimeout, CancellationToken.None).Resumed;
            OnResumed(resumed);
            report.Console = resumed.Console;
            push.Run(_conn!);
            FinishPostcopy(report, push);
        }
        catch (Exception e) when (e is IOException or MigrationFailedException or OperationCanceledException)
        {
            push.FillReport(report);
            HoldForResume(report, push, e);
        }
    }

    /// <summary>Waits for the destination's confirmation of every page, then releases the source copy.</summary>
    private void FinishPostcopy(MigrationReport report, PostcopyPush push)
    {
        push.FillReport(report);
        var done = Expect(Envelope.BodyOneofCase.PostcopyDone, PostcopyDoneTimeout, CancellationToken.None).PostcopyDone;
        report.PostcopyVerifiedPages = done.VerifiedPages;
        if (done.VerifiedPages != (ulong)_manifestPages.Length)
            throw new MigrationFailedException($"destination verified {done.VerifiedPages} of {_manifestPages.Length} post-copy pages");
        report.Success = true;
        Interlocked.Exchange(ref _holding, 0);
        ReleaseCopy($"'{_command.Name}' now runs on {_target}; every post-copy page verified there, source copy released");
    }

    /// <summary>True when the held copy holds post-copy pages (what `--resume` sends).</summary>
    public bool IsPostcopy => _manifest != null;

    private void HoldForResume(MigrationReport report, PostcopyPush? push, Exception e)
    {
        EnsureManifestPages();
        if (_tResumed < 0) _tResumed = Now;
        report.Success = false;
        report.Error = $"post-copy interrupted after GO with {push?.Remaining ?? _manifestPages.Length} of {_manifestPages.Length} pages unsent ({e.Message}); " +
            $"the destination guest stays paused on a missing page and the paused source copy is held: recover with `lm migrate {_command.Name} --from {_host.Address} --resume`";
        _phase = MigrationPhase.PostcopyInterrupted;
        _host.Log($"migration {Id}: {report.Error}");
        _conn?.Dispose();
        // Deliberately not disposing _guest: its memory is the only copy of the unsent pages. The
        // watcher lets it go if the destination turns out to have them all (a transient stall).
        StartHolding();
    }

    /// <summary>Where the guest went (a resume may reach the same destination host at a new address).</summary>
    private string _target = "";
    private int _resuming;

    /// <summary>Pages of the manifest still not confirmed by the destination (for status).</summary>
    public int PostcopyPagesTotal => _manifestPages.Length;

    /// <summary>
    /// `lm migrate NAME --resume` (QEMU's migrate-recover): a fresh connection to the destination,
    /// which answers with the manifest pages it still lacks; exactly those go (requested ones first),
    /// and the held source copy is released once the destination confirms every page. A failed
    /// resume keeps holding it, so it can be tried again.
    /// </summary>
    public MigrationReport ResumePostcopy(MigrateCommand command, Action<MigrationProgress>? progress)
    {
        if (Interlocked.Exchange(ref _resuming, 1) != 0) throw new HostException($"a resume of '{_command.Name}' is already in progress");
        string target = string.IsNullOrEmpty(command.Target) ? _target : command.Target;
        var report = new MigrationReport
        {
            Name = _command.Name, Strategy = Strategy.Postcopy, Source = _host.Address, Destination = target, MigrationId = Id,
            MemorySize = _guest.Machine.Config.MemorySize, ResumedPostcopy = true,
        };
        double t0 = Now;
        while (_inbox.TryTake(out _)) { }
        while (_pageRequests.TryTake(out _)) { }
        _readerError = null;
        _phase = MigrationPhase.PostcopyResume;
        PostcopyPush? push = null;
        using (var reporter = new ProgressReporter(this, progress))
        {
            try
            {
                _host.Log($"migration {Id}: resuming post-copy of '{_command.Name}' to {target}");
                var conn = _host.Connect(target);
                _conn = conn;
                conn.ClientHandshake(Purpose.Migrate);
                if (command.BandwidthBytesPerSecond > 0) conn.Limiter = new TokenBucket((long)command.BandwidthBytesPerSecond);
                conn.Send(new Envelope { PostcopyResume = new PostcopyResume { MigrationId = Id, Name = _command.Name } });
                new Thread(() => ReadReturnPath(conn)) { IsBackground = true, Name = $"migrate-{Id}-rx" }.Start();
                var reply = Expect(Envelope.BodyOneofCase.PostcopyResumeReply, TimeSpan.FromSeconds(10), CancellationToken.None).PostcopyResumeReply;
                if (!reply.Accepted)
                {
                    if (QueryArrival() is { State: ArrivalState.ArrivalResumed } && Interlocked.Exchange(ref _holding, 0) == 1)
                    {
                        // It got every page after all (the link failed after the last one): nothing to resume.
                        report.Success = true;
                        ReleaseCopy($"{target} already has every post-copy page of '{_command.Name}'; the held copy is released");
                        return report;
                    }
                    throw new MigrationFailedException($"the destination refused the resume: {reply.Error}");
                }
                var sent = new bool[_manifestPages.Length];
                Array.Fill(sent, true);
                var slotOf = SlotIndex();
                foreach (uint page in reply.AbsentPages)
                {
                    if (!slotOf.TryGetValue((int)page, out int slot)) throw new MigrationFailedException($"the destination lacks page {page}, which is not in the manifest");
                    sent[slot] = false;
                }
                _phase = MigrationPhase.Postcopy;
                _host.Log($"migration {Id}: the destination lacks {reply.AbsentPages.Count} of {sent.Length} pages ({reply.VerifiedPages} verified before the link failed)");
                push = new PostcopyPush(this, sent);
                push.Run(conn);
                _target = target;
                FinishPostcopy(report, push);
                lock (_host.Lock) _entry.MovedTo = target;
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or MigrationFailedException or ProtocolException or OperationCanceledException)
            {
                push?.FillReport(report);
                report.Success = false;
                report.Error = $"resume failed: {e.Message}; the source copy is still held, try `lm migrate {_command.Name} --from {_host.Address} --resume` again";
                _phase = MigrationPhase.PostcopyInterrupted;
                _host.Log($"migration {Id}: {report.Error}");
                _conn?.Dispose();
            }
            finally { Volatile.Write(ref _resuming, 0); }
        }
        report.TotalSeconds = Now - t0;
        if (_conn is { } c) report.BytesPostcopy = (ulong)c.Sent(ByteCategory.Postcopy);
        report.BytesProtocol = (ulong)(_conn?.Sent(ByteCategory.Protocol) ?? 0);
        return report;
    }

    private void EnsureManifestPages()
    {
        if (_manifestPages.Length == 0 && _manifest != null) _manifestPages = ManifestPages.Expand(_manifest, _guest.Machine.Memory.PageCount);
    }

    private Dictionary<int, int> SlotIndex()
    {
        var index = new Dictionary<int, int>(_manifestPages.Length);
        for (int i = 0; i < _manifestPages.Length; i++) index[_manifestPages[i]] = i;
        return index;
    }

    /// <summary>
    /// Sends the manifest pages not yet marked sent, each once: requested pages (with a few following
    /// ones as pre-paging) before the background push, which goes a small batch at a time so a
    /// request never waits long behind it.
    /// </summary>
    private sealed class PostcopyPush
    {
        private readonly MigrationSource _owner;
        private readonly int[] _pages;
        private readonly GuestMemory _memory;
        private readonly Dictionary<int, int> _slotOf;
        private readonly bool[] _sent;
        private readonly byte[] _raw = new byte[PushBatchPages * GuestMemory.PageSize];
        private readonly byte[] _compressed = new byte[Zstd.CompressBound(PushBatchPages * GuestMemory.PageSize)];
        private int _cursor;
        private long _total, _requested, _prepaged;

        public PostcopyPush(MigrationSource owner, bool[] sent)
        {
            _owner = owner;
            _pages = owner._manifestPages;
            _memory = owner._guest.Machine.Memory;
            _slotOf = owner.SlotIndex();
            _sent = sent;
            Remaining = sent.Count(s => !s);
            owner._postcopyToSend = Remaining;
            owner._postcopySent = 0;
        }

        public int Remaining { get; private set; }

        /// <summary>Sends every page not yet sent; throws when the link fails or the destination aborts.</summary>
        public void Run(Connection conn)
        {
            double t0 = _owner.Now;
            var slots = new List<int>(PushBatchPages);
            while (Remaining > 0)
            {
                slots.Clear();
                if (_owner._inbox.TryTake(out var early))
                {
                    if (early.BodyCase == Envelope.BodyOneofCase.None) throw new IOException($"lost the connection to the destination: {_owner._readerError?.Message}");
                    else if (early.BodyCase == Envelope.BodyOneofCase.Abort) throw new MigrationFailedException($"destination aborted: {early.Abort.Reason}");
                }
                while (slots.Count < PushBatchPages && _owner._pageRequests.TryTake(out int page))
                {
                    if (page < 0) throw new IOException($"lost the connection to the destination: {_owner._readerError?.Message}");
                    if (!_slotOf.TryGetValue(page, out int slot)) continue; // not in the manifest
                    if (!Take(slot, slots)) continue; // already sent
                    _requested++;
                    for (int k = 1; k <= PrepagePages && slot + k < _sent.Length; k++)
                        if (Take(slot + k, slots)) _prepaged++;
                }
                if (slots.Count == 0)
                    while (slots.Count < PushBatchPages && _cursor < _sent.Length) Take(_cursor++, slots);
                SendBatch(conn, slots);
            }
            _owner._host.Log($"migration {_owner.Id}: post-copy: {_total} pages sent in {(_owner.Now - t0) * 1000:F1} ms ({_requested} requested, {_prepaged} pre-paged)");
        }

        private bool Take(int slot, List<int> into)
        {
            if (slot < 0 || slot >= _sent.Length || _sent[slot]) return false;
            _sent[slot] = true;
            Remaining--;
            into.Add(slot);
            return true;
        }

        private void SendBatch(Connection conn, List<int> slots)
        {
            if (slots.Count == 0) return;
            var batch = new PageBatch();
            for (int i = 0; i < slots.Count; i++)
            {
                int page = _pages[slots[i]];
                var data = _raw.AsSpan(i * GuestMemory.PageSize, GuestMemory.PageSize);
                _memory.PageSpan(page).CopyTo(data);
                batch.Pages.Add((uint)page);
                batch.Hashes.Add(XxHash3.HashToUInt64(data));
                if (_owner._host.Options.CorruptPostcopyPage?.Invoke(page) == true) data[100] ^= 0x5A;
            }
            int n = Zstd.Compress(_raw.AsSpan(0, slots.Count * GuestMemory.PageSize), _compressed, PageSender.CompressionLevel);
            batch.Zstd = ByteString.CopyFrom(_compressed, 0, n);
            conn.Send(new Envelope { PostcopyPages = batch }, ByteCategory.Postcopy);
            if (_total == 0) _owner.Fault(FaultPoint.Postcopy);
            _total += slots.Count;
            _owner._postcopySent = (int)_total;
        }

        public void FillReport(MigrationReport report)
        {
            report.PostcopyPages = (ulong)_total;
            report.PostcopyRequestedPages = (ulong)_requested;
            report.PostcopyPrepagedPages = (ulong)_prepaged;
        }
    }

    private volatile int _postcopySent, _postcopyToSend;
}
