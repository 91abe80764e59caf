using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Operator.Api;
using Prometheus;

namespace LiveMigration.Operator.Live;

/// <summary>
/// A host's Prometheus metrics, in a registry of its own (two hosts in one process, as in the
/// tests, keep apart). Names follow Prometheus conventions: base units, _total for counters.
/// </summary>
public sealed class HostMetrics
{
    private readonly Counter _migrations, _bytes;
    private readonly Histogram _downtime, _duration;
    private readonly Gauge _mips, _icount, _lag, _throttle, _active, _guests;
    private readonly HashSet<string> _guestLabels = [];
    private readonly HashSet<string> _migratingLabels = [];

    public HostMetrics()
    {
        Registry = Metrics.NewCustomRegistry();
        var f = Metrics.WithCustomRegistry(Registry);
        _migrations = f.CreateCounter("lm_migrations_total", "Migrations this host ran as the source, by strategy and outcome.",
            new CounterConfiguration { LabelNames = ["strategy", "outcome"] });
        _bytes = f.CreateCounter("lm_migration_bytes_total", "Bytes sent on the wire by finished migrations, by category.",
            new CounterConfiguration { LabelNames = ["category"] });
        _downtime = f.CreateHistogram("lm_migration_downtime_seconds", "Guest downtime of successful migrations (source pause to destination resume).",
            new HistogramConfiguration { LabelNames = ["strategy"], Buckets = Histogram.ExponentialBuckets(0.0005, 2, 14) });
        _duration = f.CreateHistogram("lm_migration_duration_seconds", "Total time of migrations, setup to resume.",
            new HistogramConfiguration { LabelNames = ["strategy"], Buckets = Histogram.ExponentialBuckets(0.05, 2, 12) });
        _mips = f.CreateGauge("lm_guest_mips", "Guest speed over the last second, in millions of instructions per second.",
            new GaugeConfiguration { LabelNames = ["guest"] });
        _icount = f.CreateGauge("lm_guest_instructions", "Instructions the guest has retired (icount).",
            new GaugeConfiguration { LabelNames = ["guest"] });
        _lag = f.CreateGauge("lm_migration_replay_lag_seconds", "Log shipping: seconds the destination needs to replay what it has not yet.",
            new GaugeConfiguration { LabelNames = ["guest"] });
        _throttle = f.CreateGauge("lm_migration_throttle_ratio", "Fraction of time the migrating guest is held back by auto-converge (0..1).",
            new GaugeConfiguration { LabelNames = ["guest"] });
        _active = f.CreateGauge("lm_migrations_active", "Migrations in progress with this host as the source.");
        _guests = f.CreateGauge("lm_guests", "Guests on this host, by state.", new GaugeConfiguration { LabelNames = ["state"] });
    }

    public CollectorRegistry Registry { get; }

    public Task WriteAsync(Stream output, CancellationToken cancel) => Registry.CollectAndExportAsTextAsync(output, cancel);

    private static readonly GuestStatus[] MetricStatuses = [GuestStatus.Running, GuestStatus.Idle, GuestStatus.Exited, GuestStatus.MigratingOut, GuestStatus.Moved];

    internal void Guests(IReadOnlyList<GuestView> guests)
    {
        lock (_guestLabels)
        {
            var now = guests.Where(g => g.Status != GuestStatus.Moved).ToList();
            foreach (var gone in _guestLabels.Except(now.Select(g => g.Name)).ToList())
            {
                _mips.RemoveLabelled(gone);
                _icount.RemoveLabelled(gone);
                _guestLabels.Remove(gone);
            }
            foreach (var g in now)
            {
                _mips.WithLabels(g.Name).Set(g.Mips);
                _icount.WithLabels(g.Name).Set(g.Icount);
                _guestLabels.Add(g.Name);
            }
            foreach (var status in MetricStatuses)
                _guests.WithLabels(GuestStatuses.Name(status)).Set(guests.Count(g => g.Status == status));
        }
    }

    internal void Progress(string guest, MigrationProgress p)
    {
        lock (_guestLabels)
        {
            if (_migratingLabels.Add(guest)) _active.Set(_migratingLabels.Count);
            _lag.WithLabels(guest).Set(p.ReplayLagSeconds);
            _throttle.WithLabels(guest).Set(p.Throttle);
        }
    }

    internal void Finished(MigrationReport r)
    {
        lock (_guestLabels)
        {
            if (_migratingLabels.Remove(r.Name))
            {
                _lag.RemoveLabelled(r.Name);
                _throttle.RemoveLabelled(r.Name);
            }
            _active.Set(_migratingLabels.Count);
        }
        _migrations.WithLabels(Strategies.Name(r.Strategy), r.Success ? "success" : "failure").Inc();
        if (r.Success) _downtime.WithLabels(Strategies.Name(r.Strategy)).Observe(r.DowntimeSeconds);
        _duration.WithLabels(Strategies.Name(r.Strategy)).Observe(r.TotalSeconds);
        _bytes.WithLabels("checkpoint").Inc(r.BytesCheckpoint);
        _bytes.WithLabels("log").Inc(r.BytesLog);
        _bytes.WithLabels("state").Inc(r.BytesState);
        _bytes.WithLabels("protocol").Inc(r.BytesProtocol);
        _bytes.WithLabels("postcopy").Inc(r.BytesPostcopy);
        _bytes.WithLabels("disk").Inc(r.BytesDisk);
    }
}
