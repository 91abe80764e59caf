using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

internal sealed partial class MigrationSource
{
    private MigrationProgress Snapshot()
    {
        var c = _conn;
        var p = new MigrationProgress
        {
            Phase = _phase,
            ElapsedSeconds = Now,
            BytesCheckpoint = (ulong)(c?.Sent(ByteCategory.Checkpoint) ?? 0),
            BytesLog = (ulong)(c?.Sent(ByteCategory.Log) ?? 0),
            BytesState = (ulong)(c?.Sent(ByteCategory.State) ?? 0),
            BytesProtocol = (ulong)(c?.Sent(ByteCategory.Protocol) ?? 0),
            BytesPostcopy = (ulong)(c?.Sent(ByteCategory.Postcopy) ?? 0),
            SourceIcount = _guest.Machine.Icount,
            ReplayIcount = (ulong)Interlocked.Read(ref _replayIcount),
            Throttle = _throttle,
            PagesSent = (uint)_pages.PagesDone,
            PagesTotal = (uint)_guest.Machine.Memory.PageCount,
            Strategy = _currentStrategy ?? Strategy,
            Round = (uint)_round,
            DirtyPages = (uint)_lastDirty,
        };
        if (_phase is MigrationPhase.PostcopySwitchover or MigrationPhase.Postcopy or MigrationPhase.PostcopyResume or MigrationPhase.PostcopyInterrupted) { p.PagesSent = (uint)_postcopySent; p.PagesTotal = (uint)_postcopyToSend; }
        p.ReplayLagSeconds = ReplayLagSeconds(p.SourceIcount, p.ReplayIcount);
        return p;
    }

    /// <summary>Seconds the destination needs to replay what it has not yet, at its measured speed.</summary>
    private double ReplayLagSeconds(ulong source, ulong replay)
    {
        if (_currentStrategy != Strategy.Log || replay == 0 || source <= replay) return 0;
        double mips = _replayMips > 1 ? _replayMips : 100;
        return (source - replay) / (mips * 1e6);
    }

    private void FillReport(MigrationReport r)
    {
        double end = _tResumed >= 0 ? _tResumed : Now;
        r.SetupSeconds = _tSetupDone;
        r.CheckpointSeconds = _tCheckpointDone > 0 ? _tCheckpointDone - _tSetupDone : 0;
        r.LogSeconds = _tLogDone > 0 ? Math.Max(0, _tLogDone - _tCheckpointDone) : 0;
        r.SwitchoverSeconds = _tPause >= 0 && r.Success ? end - Math.Max(_tPause, _tLogDone) : 0;
        if (Strategy == Strategy.Stopcopy && _tPause >= 0 && r.Success) r.SwitchoverSeconds = end - _tPause;
        r.TotalSeconds = end;
        r.DowntimeSeconds = _tPause >= 0 && r.Success ? end - _tPause : 0;
        r.DowntimeSourceViewSeconds = r.DowntimeSeconds;
        r.DowntimeClock = "source view";
        if (r.Success && _resumed is { ResumedMonotonicNs: > 0 } resumed && resumed.ClockId != "" && resumed.ClockId == HostClock.Id)
        {
            // Both hosts read one clock: the guest was down from our pause to the destination's resume.
            double exact = ((double)resumed.ResumedMonotonicNs - HostClock.ToNanoseconds(_pauseTimestamp)) / 1e9;
            if (exact > 0 && exact <= r.DowntimeSeconds)
            {
                r.DowntimeSeconds = exact;
                r.DowntimeClock = "shared clock";
            }
        }
        if (_conn is { } c)
        {
            r.BytesCheckpoint = (ulong)c.Sent(ByteCategory.Checkpoint);
            r.BytesLog = (ulong)c.Sent(ByteCategory.Log);
            r.BytesState = (ulong)c.Sent(ByteCategory.State);
            r.BytesProtocol = (ulong)c.Sent(ByteCategory.Protocol);
            r.BytesPostcopy = (ulong)c.Sent(ByteCategory.Postcopy);
        }
        r.PagesSent = (uint)_pages.PagesSent;
        r.ZeroPages = (uint)_pages.ZeroPages;
        r.RawBytesCheckpoint = (ulong)_pages.RawBytes;
        r.MaxThrottle = _maxThrottle;
        r.MeanThrottle = _measuredThrottle; // wall time the guest was actually held back during the log phase
        if (_convergenceNote != null) r.Error = _convergenceNote;
        FillStrategyReport(r);
        lock (_timeline) r.Timeline.AddRange(_timeline);
    }

    /// <summary>Samples progress every 100 ms for the timeline; forwards it to the client every 200 ms.</summary>
    private sealed class ProgressReporter : IDisposable
    {
        private readonly MigrationSource _owner;
        private readonly Action<MigrationProgress>? _sink;
        private readonly Thread _thread;
        private readonly ManualResetEventSlim _stop = new();

        public ProgressReporter(MigrationSource owner, Action<MigrationProgress>? sink)
        {
            _owner = owner;
            _sink = sink;
            _thread = new Thread(Loop) { IsBackground = true, Name = "migrate-progress" };
            _thread.Start();
        }

        private void Loop()
        {
            long lastBytes = 0;
            double lastT = 0;
            int tick = 0;
            while (!_stop.Wait(100))
            {
                var p = _owner.Snapshot();
                long bytes = (long)(p.BytesCheckpoint + p.BytesLog + p.BytesState + p.BytesProtocol + p.BytesPostcopy);
                double dt = p.ElapsedSeconds - lastT;
                p.RateBytesPerSecond = dt > 0 ? Math.Max(0, bytes - lastBytes) / dt : 0; // a resume starts a new connection at 0
                lastBytes = bytes;
                lastT = p.ElapsedSeconds;
                lock (_owner._timeline)
                    _owner._timeline.Add(new TimelineSample
                    {
                        T = p.ElapsedSeconds, BytesPerSecond = p.RateBytesPerSecond, ReplayLagSeconds = p.ReplayLagSeconds, Throttle = p.Throttle,
                        RateLimitBytesPerSecond = _owner._conn?.Limiter?.Rate ?? 0,
                    });
                if (_owner._phase is MigrationPhase.Log or MigrationPhase.Checkpoint)
                {
                    _owner._throttleSum += p.Throttle;
                    _owner._throttleSamples++;
                }
                if (_sink != null && tick++ % 2 == 0)
                {
                    try { _sink(p); } catch (IOException) { } // the watcher went away; the migration goes on
                }
            }
        }

        public void Stop()
        {
            _stop.Set();
            if (Thread.CurrentThread != _thread) _thread.Join();
        }

        public void Dispose() => Stop();
    }
}
