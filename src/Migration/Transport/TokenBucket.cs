using System.Diagnostics;

namespace LiveMigration.Migration.Transport;

/// <summary>
/// Rate limit on the sending side: tokens (bytes) refill at <see cref="Rate"/> per second up to a
/// burst of 50 ms worth; a send waits until its bytes are covered. Rate 0 means unlimited.
/// </summary>
public sealed class TokenBucket
{
    private readonly object _lock = new();
    private double _tokens;
    private long _last = Stopwatch.GetTimestamp();

    public TokenBucket(long bytesPerSecond) => Rate = bytesPerSecond;

    public long Rate { get; }

    private double Burst => Math.Max(64 * 1024, Rate / 20.0);

    /// <summary>Blocks until <paramref name="bytes"/> may be sent.</summary>
    public void Take(int bytes, CancellationToken cancel = default)
    {
        if (Rate <= 0) return;
        double wait;
        lock (_lock)
        {
            long now = Stopwatch.GetTimestamp();
            _tokens = Math.Min(Burst, _tokens + (now - _last) * (double)Rate / Stopwatch.Frequency);
            _last = now;
            _tokens -= bytes; // may go negative: the debt is paid by waiting
            wait = _tokens >= 0 ? 0 : -_tokens / Rate;
        }
        if (wait > 0) cancel.WaitHandle.WaitOne(TimeSpan.FromSeconds(wait));
    }
}
