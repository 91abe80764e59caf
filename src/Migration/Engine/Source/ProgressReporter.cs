using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>Samples a migration's progress every 100 ms for its timeline; forwards it to the client every 200 ms.</summary>
internal sealed class ProgressReporter : IDisposable
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
            _owner.AddSample(new TimelineSample { T = p.ElapsedSeconds, BytesPerSecond = p.RateBytesPerSecond, ReplayLagSeconds = p.ReplayLagSeconds, Throttle = p.Throttle });
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
