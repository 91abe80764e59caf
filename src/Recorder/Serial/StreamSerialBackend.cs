namespace LiveMigration.Recorder.Serial;

/// <summary>
/// A serial backend over a pair of streams (stdin/stdout, a socket, pipes in tests). A reader thread
/// drains input into a queue so the guest never blocks on the host.
/// </summary>
public class StreamSerialBackend : ISerialBackend
{
    private readonly Stream _output;
    private readonly BufferedStream _buffered;
    private readonly Queue<byte> _pending = new();
    private readonly AutoResetEvent _arrived = new(false);
    private volatile bool _closed;
    private readonly Thread? _reader;

    public StreamSerialBackend(Stream? input, Stream output)
    {
        _output = output;
        _buffered = new BufferedStream(output, 4096);
        if (input == null) { _closed = true; return; }
        _reader = new Thread(() => Pump(input)) { IsBackground = true, Name = "serial-input" };
        _reader.Start();
    }

    private void Pump(Stream input)
    {
        var buffer = new byte[4096];
        try
        {
            int n;
            while ((n = input.Read(buffer, 0, buffer.Length)) > 0)
            {
                lock (_pending) for (int i = 0; i < n; i++) _pending.Enqueue(buffer[i]);
                Signal();
            }
        }
        catch (IOException) { }
        catch (ObjectDisposedException) { }
        _closed = true;
        Signal();
    }

    /// <summary>
    /// Dispose may run while the pump is still blocked in Read (a TCP backend closes its socket after
    /// disposing the event): a late signal must not become an unhandled exception that kills the host.
    /// </summary>
    private void Signal()
    {
        try { _arrived.Set(); }
        catch (ObjectDisposedException) { }
    }

    public bool InputClosed
    {
        get
        {
            if (!_closed) return false;
            lock (_pending) return _pending.Count == 0;
        }
    }

    public WaitHandle InputArrived => _arrived;

    public int Read(Span<byte> destination)
    {
        lock (_pending)
        {
            int n = Math.Min(destination.Length, _pending.Count);
            for (int i = 0; i < n; i++) destination[i] = _pending.Dequeue();
            return n;
        }
    }

    public bool HasPendingInput { get { lock (_pending) return _pending.Count > 0; } }

    public void Write(byte value)
    {
        try { _buffered.WriteByte(value); }
        catch (IOException) { } // the reader went away; the guest keeps running
    }

    public void Flush()
    {
        try { _buffered.Flush(); _output.Flush(); }
        catch (IOException) { }
        catch (ObjectDisposedException) { }
    }

    public virtual void Dispose()
    {
        Flush();
        _arrived.Dispose();
        GC.SuppressFinalize(this);
    }
}
