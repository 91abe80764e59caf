using System.Collections.Concurrent;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The source's reading half of the migration connection, on a thread of its own: heartbeats and
/// replay progress update state at once, page requests queue for post-copy, a matching ACK is
/// handed to <see cref="OnAck"/> on this thread (the commit path has no thread hand-off), and
/// everything else waits in an inbox for <see cref="Expect"/>.
/// </summary>
internal sealed class ReturnPath(PeerLiveness peer, Func<FaultPoint, bool> fault)
{
    private readonly BlockingCollection<Envelope> _inbox = new();
    private volatile Exception? _error;
    private long _replayIcount;
    private double _replayMips;

    /// <summary>Post-copy page requests from the destination; -1 when the connection is gone.</summary>
    public BlockingCollection<int> PageRequests { get; } = new();
    /// <summary>Post-copy disk block requests (runs) from the destination.</summary>
    public ConcurrentQueue<(long First, long Count)> BlockRequests { get; } = new();
    /// <summary>Set while an ACK may commit: runs on the reader thread.</summary>
    public volatile Func<Ack, bool>? OnAck;

    /// <summary>The destination's replay icount, as last reported (log shipping).</summary>
    public ulong ReplayIcount => (ulong)Interlocked.Read(ref _replayIcount);
    public double ReplayMips => _replayMips;
    public string? ErrorMessage => _error?.Message;

    public void Start(Connection conn, string threadName) =>
        new Thread(() => Read(conn)) { IsBackground = true, Name = threadName }.Start();

    /// <summary>Before a new connection (a post-copy resume): nothing of the old one is left over.</summary>
    public void Reset()
    {
        while (_inbox.TryTake(out _)) { }
        while (PageRequests.TryTake(out _)) { }
        BlockRequests.Clear();
        _error = null;
    }

    private void Read(Connection conn)
    {
        try
        {
            while (true)
            {
                var e = conn.Receive();
                peer.Heard();
                switch (e.BodyCase)
                {
                    case Envelope.BodyOneofCase.Heartbeat:
                        peer.Heartbeat(e.Heartbeat.ReceivedBytes);
                        continue;
                    case Envelope.BodyOneofCase.PageRequest:
                        PageRequests.Add((int)e.PageRequest.Page);
                        continue;
                    case Envelope.BodyOneofCase.DiskBlockRequest:
                        BlockRequests.Enqueue(((long)Math.Min(e.DiskBlockRequest.First, long.MaxValue), (long)Math.Min(e.DiskBlockRequest.Count, int.MaxValue)));
                        continue;
                    case Envelope.BodyOneofCase.ReplayProgress:
                        Interlocked.Exchange(ref _replayIcount, (long)e.ReplayProgress.Icount);
                        _replayMips = e.ReplayProgress.ReplayMips;
                        continue;
                    case Envelope.BodyOneofCase.Ack:
                        if (fault(FaultPoint.AckArrived)) continue; // the cut loses this ACK: the source never read it
                        OnAck?.Invoke(e.Ack);
                        break;
                }
                _inbox.Add(e);
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _error = e;
            _inbox.Add(new Envelope()); // wakes a waiter
            PageRequests.Add(-1);
        }
    }

    /// <summary>The next message from the destination, which must be <paramref name="kind"/>; a peer silent past its limit fails it early.</summary>
    public Envelope Expect(Envelope.BodyOneofCase kind, TimeSpan timeout, CancellationToken token)
    {
        var until = DateTime.UtcNow + timeout;
        Envelope? e;
        while (!_inbox.TryTake(out e, (int)Math.Clamp((until - DateTime.UtcNow).TotalMilliseconds, 0, 50), token))
        {
            if (DateTime.UtcNow >= until) throw new MigrationFailedException($"timed out after {timeout.TotalSeconds:F1} s waiting for {kind} from the destination");
            peer.Check();
        }
        if (e.BodyCase == kind) return e;
        if (e.BodyCase == Envelope.BodyOneofCase.Abort) throw new MigrationFailedException($"destination aborted: {e.Abort.Reason}");
        if (e.BodyCase == Envelope.BodyOneofCase.None)
        {
            _inbox.Add(e); // keep the sentinel for later waiters
            throw new IOException($"lost the connection to the destination: {_error?.Message}");
        }
        throw new MigrationFailedException($"expected {kind} from the destination, got {e.BodyCase}");
    }

    /// <summary>Throws the right error when the destination aborted or the connection went away (nothing else is expected now).</summary>
    public void Check(CancellationToken token)
    {
        if (_inbox.TryTake(out var e))
        {
            _inbox.Add(e);
            Expect(Envelope.BodyOneofCase.Ack, TimeSpan.Zero, token);
        }
    }

    /// <summary>Post-copy push: throws when the destination aborted or the connection is gone; ignores anything else.</summary>
    public void ThrowIfEnded()
    {
        if (!_inbox.TryTake(out var early)) return;
        if (early.BodyCase == Envelope.BodyOneofCase.None) throw new IOException($"lost the connection to the destination: {_error?.Message}");
        if (early.BodyCase == Envelope.BodyOneofCase.Abort) throw new MigrationFailedException($"destination aborted: {early.Abort.Reason}");
    }
}
