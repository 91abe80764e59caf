using System.Threading.Channels;

namespace LiveMigration.Operator.Live;

/// <summary>One Server-Sent Event: its type and its JSON payload.</summary>
public readonly record struct LiveEvent(string Type, string Json);

/// <summary>
/// Fans host events out to every open /api/events stream. A slow browser loses old events
/// (bounded queue, oldest dropped) instead of holding up a migration's progress callback.
/// </summary>
public sealed class LiveFeed
{
    private const int QueuePerClient = 256;
    private readonly object _lock = new();
    private readonly List<Channel<LiveEvent>> _clients = [];

    public int Clients
    {
        get { lock (_lock) return _clients.Count; }
    }

    public ChannelReader<LiveEvent> Subscribe(out Action unsubscribe)
    {
        var channel = Channel.CreateBounded<LiveEvent>(new BoundedChannelOptions(QueuePerClient) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });
        lock (_lock) _clients.Add(channel);
        unsubscribe = () =>
        {
            lock (_lock) _clients.Remove(channel);
            channel.Writer.TryComplete();
        };
        return channel.Reader;
    }

    public void Publish(string type, string json)
    {
        var e = new LiveEvent(type, json);
        lock (_lock) foreach (var c in _clients) c.Writer.TryWrite(e);
    }

    public void Close()
    {
        lock (_lock)
        {
            foreach (var c in _clients) c.Writer.TryComplete();
            _clients.Clear();
        }
    }
}
