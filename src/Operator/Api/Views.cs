using System.Text.Json.Serialization;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Operator.Api;

// What the JSON API and the live feed send (camelCase JSON). Sizes in bytes, times in seconds,
// rates per second, throttle as a fraction 0..1. See API.md.

/// <summary>A host as the dashboard shows it. Capacity and load are known for this host only (null for peers).</summary>
public sealed record HostView(
    string Address, bool Self, string? Http, bool Reachable, string? Error,
    int? Cores, double? CpuPercent, long? WorkingSetBytes, ulong GuestMemoryBytes, ulong? MaxGuestMemoryBytes,
    int MigrationsActive, IReadOnlyList<GuestView> Guests);

/// <summary>A guest as the dashboard shows it: <see cref="State"/> is for people, code compares <see cref="Status"/>.</summary>
public sealed record GuestView(
    string Name, string State, ulong Icount, double Mips, ulong MemoryBytes, string Console, string Image,
    string? MovedTo, string? Migration, int? ExitCode, [property: JsonIgnore] GuestStatus Status);

public sealed record ProgressView(
    string Phase, string Strategy, double ElapsedSeconds, ulong BytesSent, double BytesPerSecond,
    double ReplayLagSeconds, double Throttle, uint PagesSent, uint PagesTotal, uint Round, uint DirtyPages,
    ulong SourceIcount, ulong ReplayIcount);

public sealed record MigrationView(string Id, string Name, string From, string To, string Requested, ProgressView? Progress);

public sealed record StatusView(HostView Host, IReadOnlyList<MigrationView> Migrations, IReadOnlyList<HostView> Peers);

public sealed record ReportSummary(
    string Id, string Name, string Strategy, bool Success, string? Error, string Source, string Destination,
    double TotalSeconds, double DowntimeSeconds, ulong BytesTotal, bool ResumedPostcopy, string FinishedUtc);

public sealed record MigrateRequest(string? Name, string? To, string? Strategy, string? Bandwidth, uint? DowntimeLimitMs, uint? MaxThrottlePercent);

public sealed record CancelRequest(string? Name);

public sealed record Accepted(string MigrationId, string Name, string To);

public sealed record Message(string Text);

public sealed record Error(string Text);
