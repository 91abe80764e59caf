using System.Globalization;
using Google.Protobuf;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Reports;

/// <summary>
/// Every migration report a host produced: kept in memory and, with a data directory, as
/// DATA/reports/ID.json (the same JSON as `lm migrate --json`), loaded again when the host restarts.
/// </summary>
public sealed class ReportStore
{
    private static readonly JsonFormatter Formatter = new(JsonFormatter.Settings.Default.WithFormatDefaultValues(true));
    private static readonly JsonParser Parser = new(JsonParser.Settings.Default.WithIgnoreUnknownFields(true));
    private readonly object _lock = new();
    private readonly List<MigrationReport> _reports = [];
    private readonly string? _dir;

    public ReportStore(string? dataDir, Action<string>? log = null)
    {
        if (dataDir == null) return;
        _dir = Path.Combine(dataDir, "reports");
        Directory.CreateDirectory(_dir);
        foreach (var file in Directory.EnumerateFiles(_dir, "*.json"))
        {
            try { _reports.Add(Parser.Parse<MigrationReport>(File.ReadAllText(file))); }
            catch (Exception e) when (e is InvalidProtocolBufferException or InvalidJsonException or IOException)
            {
                log?.Invoke($"report {Path.GetFileName(file)} not loaded: {e.Message}");
            }
        }
        _reports.Sort((a, b) => string.CompareOrdinal(a.FinishedUtc, b.FinishedUtc));
    }

    /// <summary>Where reports are written, or null when the host has no data directory.</summary>
    public string? Folder => _dir;

    /// <summary>Fills the host-side fields (total bytes, units, finish time) and keeps the report.</summary>
    public void Add(MigrationReport report)
    {
        Complete(report);
        if (_dir != null && report.MigrationId != "")
        {
            string path = Path.Combine(_dir, $"{report.MigrationId}{(report.ResumedPostcopy ? "-resume" : "")}.json");
            File.WriteAllText(path, ToJson(report));
        }
        lock (_lock) _reports.Add(report);
    }

    public IReadOnlyList<MigrationReport> All()
    {
        lock (_lock) return [.. _reports];
    }

    /// <summary>The latest report of migration <paramref name="id"/> (a resume replaces the first report), or null.</summary>
    public MigrationReport? Find(string id)
    {
        lock (_lock) return _reports.LastOrDefault(r => r.MigrationId == id);
    }

    public static string ToJson(MigrationReport report) => Formatter.Format(report);

    public static void Complete(MigrationReport r)
    {
        r.BytesTotal = r.BytesCheckpoint + r.BytesLog + r.BytesState + r.BytesProtocol + r.BytesPostcopy + r.BytesDisk;
        r.Units = new ReportUnits
        {
            Bytes = "bytes", Time = "seconds", Rate = "bytes per second",
            Throttle = "fraction of wall time the source guest was held back, 0 to 1", Pages = "4 KiB pages",
        };
        if (r.FinishedUtc == "") r.FinishedUtc = DateTime.UtcNow.ToString("O", CultureInfo.InvariantCulture);
    }
}
