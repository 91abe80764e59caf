namespace LiveMigration.Migration.Transport.Tls;

/// <summary>
/// The socket under an <see cref="System.Net.Security.SslStream"/>, read 64 KiB at a time. SslStream asks
/// its inner stream for about one 16 KiB record per read, so a bulk transfer cost one receive call per
/// record; reading ahead took the TLS side of a 1 GiB loopback transfer from 2.5 to 2.1 s of CPU.
/// Writes pass straight through (coalescing them measured slower).
/// </summary>
internal sealed class ReadAheadStream(Stream inner) : Stream
{
    private readonly byte[] _buffer = new byte[64 << 10];
    private int _position, _length;

    public override int Read(Span<byte> destination)
    {
        if (_position == _length)
        {
            if (destination.Length >= _buffer.Length) return inner.Read(destination);
            _position = 0;
            _length = inner.Read(_buffer);
            if (_length == 0) return 0;
        }
        return Take(destination);
    }

    public override ValueTask<int> ReadAsync(Memory<byte> destination, CancellationToken cancel = default) =>
        _position < _length ? new(Take(destination.Span)) : FillAsync(destination, cancel);

    private async ValueTask<int> FillAsync(Memory<byte> destination, CancellationToken cancel)
    {
        if (destination.Length >= _buffer.Length) return await inner.ReadAsync(destination, cancel);
        _position = 0;
        _length = 0; // a cancelled read leaves the buffer empty, not stale
        _length = await inner.ReadAsync(_buffer, cancel);
        return _length == 0 ? 0 : Take(destination.Span);
    }

    private int Take(Span<byte> destination)
    {
        int n = Math.Min(destination.Length, _length - _position);
        _buffer.AsSpan(_position, n).CopyTo(destination);
        _position += n;
        return n;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancel) => ReadAsync(buffer.AsMemory(offset, count), cancel).AsTask();
    public override void Write(ReadOnlySpan<byte> source) => inner.Write(source);
    public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
    public override ValueTask WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancel = default) => inner.WriteAsync(source, cancel);
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancel) => inner.WriteAsync(buffer, offset, count, cancel);
    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken cancel) => inner.FlushAsync(cancel);

    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing) inner.Dispose();
        base.Dispose(disposing);
    }

    public override ValueTask DisposeAsync() => inner.DisposeAsync();
}
