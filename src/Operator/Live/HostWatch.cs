using LiveMigration.Migration.Engine;
using System.Diagnostics;
using System.Text.Json;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Operator.Api;

namespace LiveMigration.Operator.Live;

/// <summary>
/// Watches one host for the dashboard: its guests once a second (icount deltas give guest MIPS),
/// the peers it was told about, and every migration it runs as the source, as they progress.
/// Pushes each change to the live feed and the metrics; the browser never polls.
/// </summary>
internal sealed class HostWatch : IDisposable
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);
    private readonly GuestHost _host;
    private readonly IReadOnlyList<string> _peers;
    private readonly LiveFeed _feed;
    private readonly HostMetrics _metrics;
    private readonly JsonSerializerOptions _json;
    private readonly object _lock = new();
    private readonly Dictionary<string, MigrationView> _active = [];
    private readonly Dictionary<string, (ulong Icount, long Ticks)> _lastIcount = [];
    private readonly Dictionary<string, double> _mips = [];
    private readonly ManualResetEventSlim _stop = new();
    private readonly Thread _thread;
    private TimeSpan _lastCpu;
    private long _lastCpuTicks;
    private double _cpuPercent;
    private StatusView? _last;

    public HostWatch(GuestHost host, IReadOnlyList<string> peers, LiveFeed feed, HostMetrics metrics, JsonSerializerOptions json)
    {
        _host = host;
        _peers = peers;
        _feed = feed;
        _metrics = metrics;
        _json = json;
        _host.MigrationProgressed += OnProgress;
        _host.MigrationFinished += OnFinished;
        _lastCpu = Process.GetCurrentProcess().TotalProcessorTime;
        _lastCpuTicks = Stopwatch.GetTimestamp();
        Sample();
        _thread = new Thread(Loop) { IsBackground = true, Name = "operator-watch", Priority = ThreadPriority.BelowNormal };
        _thread.Start();
    }

    /// <summary>The dashboard's own URL, shown with the host (known once the listener is up: the picture is taken again then).</summary>
    public string? Http
    {
        get => _http;
        set { _http = value; Sample(); }
    }
    private volatile string? _http;

    /// <summary>The latest picture (at most a second old).</summary>
    public StatusView Current
    {
        get { lock (_lock) return _last!; }
    }

    public IReadOnlyList<MigrationView> Active
    {
        get { lock (_lock) return [.. _active.Values]; }
    }

    private void Loop()
    {
        while (!_stop.Wait(Interval))
        {
            try { Sample(); }
            catch (Exception e) when (e is HostException or IOException or InvalidOperationException) { } // a guest vanished mid-sample: next second
        }
    }

    private readonly object _sampling = new();

    /// <summary>Takes the picture; the watch thread and the Http setter may both call it.</summary>
    private void Sample()
    {
        lock (_sampling) SampleOnce();
    }

    private void SampleOnce()
    {
        var self = SelfView();
        var peers = _peers.Select(PeerView).ToList();
        var view = new StatusView(self, Active, peers);
        lock (_lock) _last = view;
        _metrics.Guests(self.Guests);
        _feed.Publish("status", JsonSerializer.Serialize(view, _json));
    }

    private HostView SelfView()
    {
        var reply = _host.Status();
        long now = Stopwatch.GetTimestamp();
        var guests = new List<GuestView>();
        lock (_lock)
        {
            var seen = new HashSet<string>();
            foreach (var g in reply.Guests)
            {
                seen.Add(g.Name);
                double mips = 0;
                if (_lastIcount.TryGetValue(g.Name, out var last) && g.Icount >= last.Icount && now > last.Ticks)
                    mips = (g.Icount - last.Icount) / Stopwatch.GetElapsedTime(last.Ticks, now).TotalSeconds / 1e6;
                _lastIcount[g.Name] = (g.Icount, now);
                _mips[g.Name] = mips;
                guests.Add(ToView(g, mips));
            }
            foreach (var gone in _lastIcount.Keys.Where(k => !seen.Contains(k)).ToList()) { _lastIcount.Remove(gone); _mips.Remove(gone); }
        }
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        double wall = Stopwatch.GetElapsedTime(_lastCpuTicks, now).TotalSeconds;
        if (wall > 0.2)
        {
            _cpuPercent = (cpu - _lastCpu).TotalSeconds / wall / Environment.ProcessorCount * 100;
            _lastCpu = cpu;
            _lastCpuTicks = now;
        }
        ulong used = (ulong)guests.Where(g => g.Status != GuestStatus.Moved).Sum(g => (decimal)g.MemoryBytes);
        return new HostView(_host.Address, true, Http, true, null, Environment.ProcessorCount, Math.Round(_cpuPercent, 1),
            Environment.WorkingSet, used, _host.Options.MaxMemorySize, Active.Count, guests);
    }

    private static HostView PeerView(string address)
    {
        try
        {
            using var c = HostClient.Connect(address);
            var guests = c.Status().Guests.Select(g => ToView(g, 0)).ToList();
            ulong used = (ulong)guests.Where(g => g.Status != GuestStatus.Moved).Sum(g => (decimal)g.MemoryBytes);
            return new HostView(address, false, null, true, null, null, null, null, used, null, 0, guests);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or HostException or ProtocolException or TimeoutException)
        {
            return new HostView(address, false, null, false, e.Message, null, null, null, 0, null, 0, []);
        }
    }

    private static GuestView ToView(GuestInfo g, double mips) => new(
        g.Name, g.State, g.Icount, Math.Round(mips, 2), g.MemorySize, g.Console, g.ImageName,
        g.MovedTo == "" ? null : g.MovedTo, g.Migration == "" ? null : g.Migration, g.HasExitCode ? g.ExitCode : null, g.Status);

    private void OnProgress(string id, MigrateCommand command, MigrationProgress p)
    {
        var view = new MigrationView(id, command.Name, _host.Address, command.Target, Strategies.Name(command.Strategy), ToView(p));
        lock (_lock) _active[id] = view;
        _metrics.Progress(command.Name, p);
        _feed.Publish("progress", JsonSerializer.Serialize(view, _json));
    }

    private void OnFinished(MigrationReport r)
    {
        lock (_lock) _active.Remove(r.MigrationId);
        _metrics.Finished(r);
        _feed.Publish("report", JsonSerializer.Serialize(Summary(r), _json));
    }

    public static ProgressView ToView(MigrationProgress p) => new(
        Strategies.Name(p.Phase), Strategies.Name(p.Strategy), p.ElapsedSeconds, p.BytesCheckpoint + p.BytesLog + p.BytesState + p.BytesProtocol + p.BytesPostcopy,
        p.RateBytesPerSecond, p.ReplayLagSeconds, p.Throttle, p.PagesSent, p.PagesTotal, p.Round, p.DirtyPages, p.SourceIcount, p.ReplayIcount);

    public static ReportSummary Summary(MigrationReport r) => new(
        r.MigrationId, r.Name, Strategies.Name(r.Strategy), r.Success, r.Error == "" ? null : r.Error, r.Source, r.Destination,
        r.TotalSeconds, r.DowntimeSeconds, r.BytesTotal, r.ResumedPostcopy, r.FinishedUtc);

    public void Dispose()
    {
        _host.MigrationProgressed -= OnProgress;
        _host.MigrationFinished -= OnFinished;
        _stop.Set();
        _thread.Join();
    }
}
