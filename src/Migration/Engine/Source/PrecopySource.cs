using LiveMigration.Guest;
using LiveMigration.Guest.Memory;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Xbzrle;
using LiveMigration.Recorder;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Pre-copy (DESIGN.md "Migration", strategy 2): iterative rounds over the dirty byte-map with a
/// client bit of its own while the guest runs. Zero and balloon-free pages travel as zero-page
/// markers; other pages as XBZRLE deltas against the page cache (or whole on a miss), batched
/// through zstd (<see cref="PrecopyPageEncoder"/>). After each round the remaining dirty pages are
/// priced at the bytes per page the round actually cost and the measured link rate; when that fits
/// the downtime limit the guest pauses and the last dirty pages go with the final state. KVM's
/// rules guard the loop: few dirty pages left, no progress for two rounds, at most
/// <see cref="MaxRounds"/> rounds. With auto-converge a round that makes no progress raises the
/// guest's throttle instead of ending it. Under auto a pre-copy that gives up hands its still-dirty
/// pages on (<see cref="TryRun"/> returns null, the guest paused) instead of a long stop-and-copy.
/// </summary>
internal sealed class PrecopySource : ISourceStrategy
{
    public const int MaxRounds = 30;
    /// <summary>"Few dirty pages left": a stop-and-copy of this many is cheap whatever the budget.</summary>
    private const int FewDirtyPages = 64;
    public const ulong DefaultXbzrleCacheBytes = 64UL << 20;

    private readonly SourceContext _ctx;
    private readonly SourceSwitchover _switchover;
    private readonly bool _autoConverge, _handOverWhenStuck;
    private MachineSnapshot? _c0;
    private DirtyClient? _sinceC0;
    private readonly PrecopyCounts _counts = new();
    private readonly List<double> _roundRates = [];
    private int _round;
    private int _lastDirty;
    private string _convergedBy = "";

    /// <param name="autoConverge">Raise the throttle when rounds make no progress (QEMU's auto-converge).</param>
    /// <param name="handOverWhenStuck">Give up with the dirty pages in hand (auto) rather than stop-and-copy them.</param>
    /// <param name="fromC0">After log shipping fell back: C0 and the pages written since; the first round sends those as deltas against C0.</param>
    public PrecopySource(SourceContext ctx, SourceSwitchover switchover, bool autoConverge, bool handOverWhenStuck = false,
        (MachineSnapshot C0, DirtyClient SinceC0)? fromC0 = null)
    {
        _ctx = ctx;
        _switchover = switchover;
        _autoConverge = autoConverge;
        _handOverWhenStuck = handOverWhenStuck;
        (_c0, _sinceC0) = fromC0 is { } h ? (h.C0, h.SinceC0) : (null, null);
    }

    public static ulong CacheBytes(MigrateCommand command) => command.XbzrleCacheBytes == 0 ? DefaultXbzrleCacheBytes : command.XbzrleCacheBytes;

    /// <summary>Pre-copy's auto-converge cap (QEMU's max-cpu-throttle, default 99 %).</summary>
    private double ThrottleCap => Math.Min(0.99, _ctx.MaxThrottle);

    /// <summary>After <see cref="TryRun"/> gave up: the pages still dirty, and the encoder that knows what the destination holds.</summary>
    public List<int> Leftover { get; } = [];
    public PrecopyPageEncoder? Encoder { get; private set; }
    public string ConvergedBy => _convergedBy;

    public SwitchoverPoint Run(CancellationToken token) =>
        TryRun(token) ?? throw new InvalidOperationException("pre-copy handed over without a next strategy");

    /// <summary>Runs pre-copy to the switchover; null when it gave up and hands over (only with handOverWhenStuck).</summary>
    public SwitchoverPoint? TryRun(CancellationToken token)
    {
        var ctx = _ctx;
        var machine = ctx.Guest.Machine;
        var memory = machine.Memory;
        var conn = ctx.Conn!;
        var port = ctx.Guest.Port;
        ctx.Phase = MigrationPhase.Precopy;
        double limit = ctx.DowntimeLimit;
        var cache = new XbzrlePageCache((long)CacheBytes(ctx.Command));
        var sender = Encoder = new PrecopyPageEncoder(machine, cache, _counts, e => conn.Send(e, ByteCategory.Checkpoint, token));
        var refresher = new DigestRefresher();
        var adaptive = AdaptiveRate.For(ctx.Command);
        var capBucket = conn.Limiter;
        port.Log ??= refresher; // log shipping is over (or never ran) when pre-copy starts

        DirtyClient client;
        var pages = new List<int>(memory.PageCount);
        if (_sinceC0 != null)
        {
            // The guest is paused here (log shipping stopped): nothing is written in between.
            client = memory.CreateDirtyClient("precopy");
            client.CollectAndClear(pages); // a new client starts all dirty; from now on it sees writes only
            pages.Clear();
            _sinceC0.CollectAndClear(pages);
            _sinceC0.Release();
            _sinceC0 = null;
            ctx.Guest.Resume();
        }
        else
        {
            client = memory.CreateDirtyClient("precopy"); // every page dirty: round 0 sends everything
            client.CollectAndClear(pages);
            ctx.DiskSender.SendWhileRunning(token); // the disk's first pass; the pause sends the blocks changed since
        }

        try
        {
            int noProgress = 0;
            int previous = int.MaxValue;
            bool gaveUp = false;
            while (true)
            {
                token.ThrowIfCancellationRequested();
                _round++;
                long wireBefore = conn.SentTotal;
                long transmittedBefore = _counts.Transmitted;
                sender.Round = _round;
                if (adaptive != null) conn.Limiter = new TokenBucket((long)adaptive.Rate);
                _roundRates.Add(conn.Limiter?.Rate ?? 0);
                double t0 = ctx.Now;
                foreach (int page in pages) sender.Send(page, _c0);
                sender.Flush();
                // The disk's dirty blocks go every round too (a block dirty map by hashes), so the pause
                // sends only those the last round dirtied.
                if (ctx.Host.Options.PrecopyDiskEveryRound) ctx.DiskSender.SendWhileRunning(token);
                // A round counts when the destination has it, not when it sits in a socket buffer.
                ctx.Peer.WaitCaughtUp(conn.SentTotal, token, () => ctx.ReturnPath.Check(token));
                if (_c0 != null) { _c0.Dispose(); _c0 = null; } // only round 1 after a fallback needs it
                if (ctx.Times.CheckpointDone == 0) { ctx.Times.CheckpointDone = ctx.Now; ctx.Fault(FaultPoint.Checkpoint); }
                ctx.ReturnPath.Check(token);
                double seconds = Math.Max(ctx.Now - t0, 1e-4);
                long wire = conn.SentTotal - wireBefore;
                // Price a dirty page at what a transmitted page cost this round (unchanged pages cost nothing
                // but say nothing about the next ones); with too few to go by, at a whole page.
                long transmitted = _counts.Transmitted - transmittedBefore;
                double bytesPerPage = transmitted >= 16 ? Math.Max(64, wire / (double)transmitted) : GuestMemory.PageSize;
                double rate = conn.Limiter is { } l ? Math.Min(l.Rate, Math.Max(wire / seconds, 1)) : Math.Max(wire / seconds, 1);
                if (wire < 256 * 1024 && conn.Limiter is { } l2) rate = l2.Rate; // a short round measures nothing
                else if (wire < 256 * 1024) rate = Math.Max(rate, 100e6);
                if (adaptive != null) rate = capBucket?.Rate ?? Math.Max(rate, 100e6); // the stop-and-copy goes at the cap

                pages.Clear();
                // Keep the RAM digest current while the guest runs, so the digest at the pause rehashes
                // only the last pages. The guest's own thread does it, between instructions: hashing
                // from here could race a store in flight.
                refresher.Request(TimeSpan.FromMilliseconds(50));
                int dirty = client.CountDirty();
                int dirtyBlocks = ctx.DiskSender.DirtyBlocks();
                _lastDirty = dirty;
                adaptive?.AfterRound(dirty, seconds);
                double predicted = (dirty * bytesPerPage + dirtyBlocks * (double)Guest.Devices.Virtio.Block.Disk.BlockSize) / rate;
                string blocks = dirtyBlocks > 0 ? $" and {dirtyBlocks} dirty disk blocks" : "";
                if (dirty + dirtyBlocks <= FewDirtyPages) { _convergedBy = $"few dirty pages ({dirty}){blocks} after round {_round}"; break; }
                if (predicted <= limit) { _convergedBy = $"downtime budget: {dirty} dirty pages{blocks}, predicted {predicted * 1000:F1} ms <= {limit * 1000:F0} ms after round {_round}"; break; }
                if (_round >= MaxRounds) { _convergedBy = $"iteration cap ({MaxRounds} rounds), {dirty} dirty pages{blocks} left (predicted {predicted * 1000:F0} ms)"; gaveUp = true; break; }
                // Progress over all that is left to send: a busy disk alone can keep pre-copy from converging.
                int left = dirty + dirtyBlocks;
                if (left >= previous) noProgress++;
                else noProgress = 0;
                previous = Math.Min(previous, left);
                if (noProgress >= 2)
                {
                    var throttle = ctx.Throttle;
                    if (_autoConverge && throttle.Value < ThrottleCap - 1e-9)
                    {
                        throttle.Set(Math.Min(ThrottleCap, throttle.Value == 0 ? 0.2 : throttle.Value + 0.1));
                        ctx.Log($"auto-converge: throttle {throttle.Value:P0} ({dirty} pages dirty{blocks}, no progress)");
                        noProgress = 0;
                    }
                    else { _convergedBy = $"no progress for 2 rounds ({dirty} dirty pages{blocks}, predicted {predicted * 1000:F0} ms{(throttle.Value > 0 ? $", throttle at its cap {throttle.Value:P0}" : "")})"; gaveUp = true; break; }
                }
                // Give the guest a moment to dirty pages between very short rounds.
                if (seconds < 0.005) Thread.Sleep(5);
                client.CollectAndClear(pages);
            }
            ctx.Log($"pre-copy ends: {_convergedBy}");
            ctx.Times.LogDone = ctx.Now;

            if (adaptive != null) conn.Limiter = capBucket; // the last pages go at the cap (Clark et al.)
            _roundRates.Add(conn.Limiter?.Rate ?? 0);
            _switchover.Pause();
            if (port.Log == refresher) port.Log = null;
            ctx.Throttle.Clear();
            ctx.Phase = MigrationPhase.Switchover;
            client.CollectAndClear(pages);
            if (gaveUp && _handOverWhenStuck)
            {
                Leftover.AddRange(pages);
                return null;
            }
            _round++;
            sender.Round = _round;
            foreach (int page in pages) sender.Send(page, null);
            sender.Flush();
            ctx.DiskSender.SendAtPause(token);
            double tPages = ctx.Now;
            ulong digest = machine.ComputeDigest();
            ctx.Log($"stop-and-copy of {pages.Count} pages took {(tPages - ctx.Times.Pause) * 1000:F1} ms, the digest {(ctx.Now - tPages) * 1000:F1} ms");
            _switchover.SendFinalState(token, digest);
            return new SwitchoverPoint(machine.Icount, digest);
        }
        finally
        {
            if (port.Log == refresher) port.Log = null;
            client.Release();
            _c0?.Dispose();
            _c0 = null;
        }
    }

    public void Release()
    {
        _sinceC0?.Release();
        _sinceC0 = null;
        _c0?.Dispose();
        _c0 = null;
    }

    public void FillReport(MigrationReport r)
    {
        r.PrecopyRounds = (uint)_round;
        r.XbzrlePages = (ulong)_counts.Xbzrle;
        r.XbzrleBytes = (ulong)_counts.XbzrleBytes;
        r.FullPages = (ulong)_counts.Full;
        r.UnchangedPages = (ulong)_counts.Unchanged;
        r.FreePages = (ulong)_counts.Free;
        r.ConvergedBy = _convergedBy;
        r.RoundRateBytesPerSecond.AddRange(_roundRates);
        if (_round > 0)
        {
            r.PagesSent += (uint)(_counts.Xbzrle + _counts.Full);
            r.ZeroPages += (uint)_counts.Zero;
        }
    }

    public void FillProgress(MigrationProgress p)
    {
        p.Round = (uint)_round;
        p.DirtyPages = (uint)_lastDirty;
    }

    /// <summary>Refreshes the RAM digest on the guest's thread when asked (an input log that logs nothing).</summary>
    private sealed class DigestRefresher : IInputLog
    {
        private volatile bool _wanted;
        private readonly ManualResetEventSlim _done = new();

        public bool Request(TimeSpan wait)
        {
            _done.Reset();
            _wanted = true;
            return _done.Wait(wait); // an idle guest may not poll soon: the pause's digest covers what is left
        }

        public void OnPoll(Machine machine)
        {
            if (!_wanted) return;
            _wanted = false;
            machine.Memory.RefreshRamDigest();
            _done.Set();
        }

        public void TimeDelivered(Machine machine, ulong time) { }
        public void TimeRead(Machine machine, ulong time) { }
        public void SerialInput(Machine machine, ReadOnlySpan<byte> data) { }
        public void Entropy(Machine machine, ushort value) { }
        public void BlockCompletion(Machine machine, int count) { }
    }
}
