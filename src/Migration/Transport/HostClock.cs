using System.Diagnostics;

namespace LiveMigration.Migration.Transport;

/// <summary>
/// The monotonic clock and which machine boot it belongs to: two hosts with the same <see cref="Id"/>
/// read one clock, so the source can measure downtime exactly (its pause to the destination's resume);
/// otherwise only its own view (pause to the Resumed message) is meaningful.
/// </summary>
public static class HostClock
{
    public static string Id { get; } = ReadBootId();

    public static ulong ToNanoseconds(long timestamp) => (ulong)((double)timestamp * 1e9 / Stopwatch.Frequency);

    private static string ReadBootId()
    {
        try { return File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return ""; } // unknown: never shared
    }
}
