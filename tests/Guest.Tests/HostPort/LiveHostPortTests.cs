using System.Diagnostics;
using LiveMigration.Guest.Cpu;
using LiveMigration.Recorder;
using LiveMigration.Recorder.Serial;

namespace LiveMigration.Guest.Tests.HostPort;

/// <summary>The real-world port: serial input reaches a sleeping guest promptly; shutdown is clean.</summary>
public class LiveHostPortTests
{
    /// <summary>A stream whose Read blocks until it is given data or closed, like a socket or a pipe.</summary>
    private sealed class BlockingStream : Stream
    {
        private readonly System.Collections.Concurrent.BlockingCollection<byte[]> _chunks = new();
        public void Feed(byte[] data) => _chunks.Add(data);
        public void Close(bool _) => _chunks.CompleteAdding();
        public override int Read(byte[] buffer, int offset, int count)
        {
            if (!_chunks.TryTake(out var chunk, Timeout.Infinite)) return 0;
            chunk.CopyTo(buffer, offset);
            return chunk.Length;
        }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    [Fact]
    public void QueuedInputReachesASleepingGuestWithoutWaiting()
    {
        var input = new BlockingStream();
        using var backend = new StreamSerialBackend(input, Stream.Null);
        var port = new LiveHostPort(backend);
        using var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, port);
        m.Uart.Write(1, 1, 1);  // RX interrupt on; FIFO off, so one byte at a time
        m.Cpu.Mie = Irq.MEIP;
        input.Feed("abc"u8.ToArray());
        var clock = Stopwatch.StartNew();
        while (!backend.HasPendingInput && clock.ElapsedMilliseconds < 5000) Thread.Sleep(1);

        var got = new List<char>();
        clock.Restart();
        for (int i = 0; i < 3; i++)
        {
            Assert.True(port.WaitForInput(m));
            m.Uart.Read(0, 1, out ulong ch);
            got.Add((char)ch);
        }
        Assert.Equal("abc", new string(got.ToArray()));
        // Each wait used to sleep up to a second before looking at input already queued.
        Assert.True(clock.ElapsedMilliseconds < 800, $"three queued bytes took {clock.ElapsedMilliseconds} ms");
        input.Close(true);
    }

    [Fact]
    public void ClosedInputWithNothingArmedIsIdle()
    {
        var input = new BlockingStream();
        using var backend = new StreamSerialBackend(input, Stream.Null);
        input.Close(true);
        var clock = Stopwatch.StartNew();
        while (!backend.InputClosed && clock.ElapsedMilliseconds < 5000) Thread.Sleep(1);
        var port = new LiveHostPort(backend);
        using var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, port);
        m.Cpu.Mie = Irq.MEIP;
        Assert.False(port.WaitForInput(m));
    }

    [Fact]
    public void InputEndingAfterDisposeDoesNotCrashTheHost()
    {
        var input = new BlockingStream();
        var backend = new StreamSerialBackend(input, Stream.Null);
        backend.Dispose();
        input.Close(true); // the pump thread wakes up after its event is gone
        // An unhandled exception on the pump thread would abort this process; wait until it is done.
        var clock = Stopwatch.StartNew();
        while (!backend.InputClosed && clock.ElapsedMilliseconds < 10_000) Thread.Sleep(5);
        Assert.True(backend.InputClosed);
        Thread.Sleep(50); // the signal comes right after the closed flag
    }
}
