using System.Diagnostics;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// What every source-side strategy and the switchover share, and nothing more: the guest, the
/// command, the connection and its return path, the throttle, the clock, the strategy log, fault
/// injection. Each strategy keeps its own state in its own type.
/// </summary>
internal sealed class SourceContext
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private volatile MigrationPhase _phase = MigrationPhase.Setup;

    public SourceContext(GuestHost host, GuestEntry entry, MigrateCommand command, MigrationSource owner)
    {
        Host = host;
        Entry = entry;
        Guest = entry.Instance!;
        Command = command;
        Owner = owner;
        Target = command.Target;
        Peer = new PeerLiveness(host.Options.PeerSilenceLimit);
        ReturnPath = new ReturnPath(Peer, Fault);
        Throttle = new GuestThrottle(Guest.Port);
        StrategyLog = new StrategyLog(this);
        DiskSender = new DiskSender(this);
    }

    public string Id { get; } = Guid.NewGuid().ToString("N")[..16];
    public GuestHost Host { get; }
    public GuestEntry Entry { get; }
    public GuestInstance Guest { get; }
    public MigrateCommand Command { get; }
    /// <summary>The migration this context belongs to (what the host's table holds).</summary>
    public MigrationSource Owner { get; }
    /// <summary>Where the guest goes (a post-copy resume may reach the same destination at a new address).</summary>
    public string Target { get; set; }
    public Connection? Conn { get; set; }
    /// <summary>The ownership epoch this host holds the guest under, read at set-up (the commit compares it).</summary>
    public long Epoch { get; set; }
    public PeerLiveness Peer { get; }
    public ReturnPath ReturnPath { get; }
    public GuestThrottle Throttle { get; }
    public StrategyLog StrategyLog { get; }
    /// <summary>Pages of a whole-memory send (stop-and-copy, checkpoint C0).</summary>
    public PageSender Pages { get; } = new();
    /// <summary>The guest's disk, for whichever strategy runs (nothing when it has none).</summary>
    public DiskSender DiskSender { get; }
    public PhaseTimes Times { get; } = new();

    public MigrationPhase Phase { get => _phase; set => _phase = value; }
    /// <summary>Seconds since the migration started.</summary>
    public double Now => _clock.Elapsed.TotalSeconds;

    /// <summary>The downtime the command allows, in seconds (10 ms unless set).</summary>
    public double DowntimeLimit => Math.Max(1, Command.DowntimeLimitMs == 0 ? 10 : Command.DowntimeLimitMs) / 1000.0;

    /// <summary>The user's throttle cap (`--max-throttle`), at most 99 %.</summary>
    public double MaxThrottle => Command.HasMaxThrottlePercent ? Math.Clamp(Command.MaxThrottlePercent / 100.0, 0, 0.99) : 0.99;

    public void Log(string message) => Host.Log($"migration {Id}: {message}");

    /// <returns>True when the test hook cut the connection here.</returns>
    public bool Fault(FaultPoint point)
    {
        if (Host.Options.Fault?.Invoke(point) != true) return false;
        Host.Log($"fault injection: cutting the migration connection at {point}");
        Conn?.Abort();
        return true;
    }
}

/// <summary>When each phase ended, in seconds since the start (-1: not yet).</summary>
internal sealed class PhaseTimes
{
    public double SetupDone, CheckpointDone, LogDone, Pause = -1, Resumed = -1, Go;
    /// <summary>The pause as a <see cref="Stopwatch"/> timestamp (compared with the destination's resume on a shared clock).</summary>
    public long PauseTimestamp;
}

/// <summary>The guest's throttle (auto-converge): what it is, and the highest it went.</summary>
internal sealed class GuestThrottle(GuestHostPort port)
{
    private readonly TimeSpan _before = port.ThrottledTime;

    public double Value { get; private set; }
    public double Max { get; private set; }
    /// <summary>The guest's time held back by this migration's throttle so far.</summary>
    public TimeSpan HeldBack => port.ThrottledTime - _before;

    public void Set(double value)
    {
        Value = value;
        port.Throttle = value;
        Max = Math.Max(Max, value);
    }

    /// <summary>The guest runs at full speed again.</summary>
    public void Clear()
    {
        Value = 0;
        port.Throttle = 0;
    }
}

/// <summary>The strategy switches of a migration, for the log and the report.</summary>
internal sealed class StrategyLog(SourceContext ctx)
{
    private readonly List<StrategySwitch> _switches = [];

    public Strategy? Current { get; private set; }

    public void Switch(Strategy to, string reason)
    {
        var s = new StrategySwitch { T = ctx.Now, To = to, Reason = reason };
        if (Current is { } from) s.From = from;
        lock (_switches) _switches.Add(s);
        ctx.Log($"strategy {(Current is { } f ? Strategies.Name(f) + " -> " : "")}{Strategies.Name(to)}: {reason}");
        Current = to;
    }

    public void FillReport(MigrationReport r)
    {
        lock (_switches) r.Switches.AddRange(_switches);
    }
}
