using System.Diagnostics;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The source's view of its destination: any message counts as a sign of life; the destination's
/// Heartbeat also says how many bytes it has taken off the connection. A source never pauses toward
/// a peer it has not heard from lately, and a peer silent past <see cref="Limit"/> fails the migration
/// (before commit: roll back) instead of stalling it.
/// </summary>
internal sealed class PeerLiveness(TimeSpan limit)
{
    /// <summary>A peer heard from within this is fresh enough to pause toward.</summary>
    private static readonly TimeSpan Fresh = TimeSpan.FromMilliseconds(250);

    private long _lastHeard = Stopwatch.GetTimestamp();
    private long _received;

    public TimeSpan Limit => limit;
    public long Received => Interlocked.Read(ref _received);
    public TimeSpan Silence => Stopwatch.GetElapsedTime(Volatile.Read(ref _lastHeard));

    public void Heard() => Volatile.Write(ref _lastHeard, Stopwatch.GetTimestamp());

    public void Heartbeat(ulong receivedBytes)
    {
        Interlocked.Exchange(ref _received, (long)receivedBytes);
        Heard();
    }

    /// <summary>Throws when the peer has been silent past the limit.</summary>
    public void Check()
    {
        var silence = Silence;
        if (silence > limit) throw new MigrationFailedException(SilentMessage(silence));
    }

    public string SilentMessage(TimeSpan silence) =>
        $"the destination has not answered for {silence.TotalSeconds:F1} s (limit {limit.TotalSeconds:F1} s): it is stopped, stalled or cut off";

    /// <summary>
    /// Before a pause or a convergence verdict: waits until the peer has taken off the connection at
    /// least <paramref name="sentBytes"/> and was heard from lately; throws when it stays silent past the limit.
    /// </summary>
    public void WaitCaughtUp(long sentBytes, CancellationToken token, Action? poll = null)
    {
        while (Received < sentBytes || Silence > Fresh)
        {
            token.ThrowIfCancellationRequested();
            Check();
            poll?.Invoke();
            Thread.Sleep(1);
        }
    }
}
