using Google.Protobuf;
using LiveMigration.Guest.Memory;
using LiveMigration.Trace.Compression;
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
/// through zstd. After each round the remaining dirty pages are priced at the bytes per page the
/// round actually cost and the measured link rate; when that fits the downtime limit the guest
/// pauses and the last dirty pages go with the final state. KVM's rules guard the loop: few dirty
/// pages left, no progress for two rounds, at most <see cref="MaxRounds"/> rounds. With
/// auto-converge a round that makes no progress raises the guest's throttle instead of ending it.
/// </summary>
internal sealed partial class MigrationSource
{
    private const int MaxRounds = 30;
    /// <summary>"Few dirty pages left": a stop-and-copy of this many is cheap whatever the budget.</summary>
    private const int FewDirtyPages = 64;
    public const ulong DefaultXbzrleCacheBytes = 64UL << 20;

    private readonly List<StrategySwitch> _switches = [];
    private Strategy? _currentStrategy;
    private int _round;
    private int _lastDirty;
    private string _convergedBy = "";
    private readonly PrecopyCounts _counts = new();
    private readonly List<double> _roundRates = [];

    private void SwitchStrategy(Strategy to, string reason)
    {
        var s = new StrategySwitch { T = Now, To = to, Reason = reason };
        if (_currentStrategy is { } from) s.From = from;
        lock (_switches) _switches.Add(s);
        _host.Log($"migration {Id}: strategy {(_currentStrategy is { } f ? Strategies.Name(f) + " -> " : "")}{Strategies.Name(to)}: {reason}");
        _currentStrategy = to;
    }

    /// <summary>
    /// Runs pre-copy to the switchover. <paramref name="c0"/> and <paramref name="sinceC0"/> are set
    /// after an auto fallback: the first round sends the pages dirtied since C0 as deltas against the
    /// C0 copies (which the destination holds again after dropping its replay).
    /// </summary>
    private (ulong Icount, ulong Digest) Precopy(CancellationToken token, LiveMigration.Guest.MachineSnapshot? c0 = null, DirtyClient? sinceC0 = null)
    {
        var machine = _guest.Machine;
        var memory = machine.Memory;
        var conn = _conn!;
        _phase = MigrationPhase.Precopy;
        double limit = Math.Max(1, _command.DowntimeLimitMs == 0 ? 10 : _command.DowntimeLimitMs) / 1000.0;
        ulong cacheBytes = _command.XbzrleCacheBytes == 0 ? DefaultXbzrleCacheBytes : _command.XbzrleCacheBytes;
        var cache = new XbzrlePageCache((long)cacheBytes);
        var sender = new PrecopyPageEncoder(machine, cache, _counts, e => conn.Send(e, ByteCategory.Checkpoint, token));
        var refresher = new DigestRefresher();
        var adaptive = AdaptiveRate.For(_command);
        var capBucket = conn.Limiter;
        _guest.Port.Log ??= refresher; // log shipping is over (or never ran) when pre-copy starts

        DirtyClient client;
        var pages = new List<int>(memory.PageCount);
        if (sinceC0 != null)
        {
            // The guest is paused here (the caller stopped logging): nothing is written in between.
            client = memory.CreateDirtyClient("precopy");
            client.CollectAndClear(pages); // a new client starts all dirty; from now on it sees writes only
            pages.Clear();
            sinceC0.CollectAndClear(pages);
            sinceC0.Release();
            _guest.Resume();
        }
        else
        {
            client = memory.CreateDirtyClient("precopy"); // every page dirty: round 0 sends everything
            client.CollectAndClear(pages);
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
                double t0 = Now;
                foreach (int page in pages) sender.Send(page, c0);
                sender.Flush();
                // A round counts when the destination has it, not when it sits in a socket buffer.
                _peer.WaitCaughtUp(conn.SentTotal, token, () => CheckReturnPath(token));
                if (c0 != null) { c0.Dispose(); c0 = null; _retainedC0 = null; } // only round 1 after a fallback needs it
                if (_tCheckpointDone == 0) { _tCheckpointDone = Now; Fault(FaultPoint.Checkpoint); }
                CheckReturnPath(token);
                double seconds = Math.Max(Now - t0, 1e-4);
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
                _lastDirty = dirty;
                adaptive?.AfterRound(dirty, seconds);
                double predicted = dirty * bytesPerPage / rate;
                if (dirty <= FewDirtyPages) { _convergedBy = $"few dirty pages ({dirty}) after round {_round}"; break; }
                if (predicted <= limit) { _convergedBy = $"downtime budget: {dirty} dirty pages, predicted {predicted * 1000:F1} ms <= {limit * 1000:F0} ms after round {_round}"; break; }
                if (_round >= MaxRounds) { _convergedBy = $"iteration cap ({MaxRounds} rounds), {dirty} dirty pages left (predicted {predicted * 1000:F0} ms)"; gaveUp = true; break; }
                if (dirty >= previous) noProgress++;
                else noProgress = 0;
                previous = Math.Min(previous, dirty);
                if (noProgress >= 2)
                {
                    if ((_command.AutoConverge || Strategy == Strategy.Auto) && _throttle < PrecopyThrottleCap - 1e-9)
                    {
                        SetThrottle(Math.Min(PrecopyThrottleCap, _throttle == 0 ? 0.2 : _throttle + 0.1));
                        _host.Log($"migration {Id}: auto-converge: throttle {_throttle:P0} ({dirty} pages dirty, no progress)");
                        noProgress = 0;
                    }
                    else { _convergedBy = $"no progress for 2 rounds ({dirty} dirty pages, predicted {predicted * 1000:F0} ms{(_throttle > 0 ? $", throttle at its cap {_throttle:P0}" : "")})"; gaveUp = true; break; }
                }
                // Give the guest a moment to dirty pages between very short rounds.
                if (seconds < 0.005) Thread.Sleep(5);
                client.CollectAndClear(pages);
            }
            _host.Log($"migration {Id}: pre-copy ends: {_convergedBy}");
            _tLogDone = Now;

            if (adaptive != null) conn.Limiter = capBucket; // the last pages go at the cap (Clark et al.)
            _roundRates.Add(conn.Limiter?.Rate ?? 0);
            Pause();
            if (_guest.Port.Log == refresher) _guest.Port.Log = null;
            _guest.Port.Throttle = 0;
            _throttle = 0;
            _phase = MigrationPhase.Switchover;
            client.CollectAndClear(pages);
            if (gaveUp && Strategy == Strategy.Auto)
            {
                SwitchStrategy(Strategy.Postcopy, $"pre-copy does not converge either: {_convergedBy}");
                return PostcopyAfterPrecopy(pages, sender, token);
            }
            _round++;
            sender.Round = _round;
            foreach (int page in pages) sender.Send(page, null);
            sender.Flush();
            double tPages = Now;
            ulong digest = machine.ComputeDigest();
            _host.Log($"migration {Id}: stop-and-copy of {pages.Count} pages took {(tPages - _tPause) * 1000:F1} ms, the digest {(Now - tPages) * 1000:F1} ms");
            SendFinalState(token, digest);
            return (machine.Icount, digest);
        }
        finally
        {
            if (_guest.Port.Log == refresher) _guest.Port.Log = null;
            client.Release();
            c0?.Dispose();
        }
    }

    private void FillStrategyReport(MigrationReport r)
    {
        lock (_switches) r.Switches.AddRange(_switches);
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

        public void OnPoll(LiveMigration.Guest.Machine machine)
        {
            if (!_wanted) return;
            _wanted = false;
            machine.Memory.RefreshRamDigest();
            _done.Set();
        }

        public void TimeDelivered(LiveMigration.Guest.Machine machine, ulong time) { }
        public void TimeRead(LiveMigration.Guest.Machine machine, ulong time) { }
        public void SerialInput(LiveMigration.Guest.Machine machine, ReadOnlySpan<byte> data) { }
        public void Entropy(LiveMigration.Guest.Machine machine, ushort value) { }
        public void BlockCompletion(LiveMigration.Guest.Machine machine, int count) { }
    }

    private LiveMigration.Guest.MachineSnapshot? _retainedC0;
    private DirtyClient? _sinceC0;

    /// <summary>Throws the right error when the destination aborted or the connection went away.</summary>
    private void CheckReturnPath(CancellationToken token)
    {
        if (_inbox.TryTake(out var e))
        {
            _inbox.Add(e);
            Expect(Envelope.BodyOneofCase.Ack, TimeSpan.Zero, token);
        }
    }
}
