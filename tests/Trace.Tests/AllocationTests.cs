namespace LiveMigration.Trace.Tests;

public class AllocationTests
{
    [Fact]
    public void Logging_and_decoding_events_allocates_nothing_per_event()
    {
        var header = new Schema.TraceHeader { Machine = new Schema.MachineConfigProto { MemorySize = 1 << 20 } };
        using var writer = new TraceWriter(Stream.Null, header, new TraceWriterOptions());
        byte[] serial = "x"u8.ToArray();
        void Log(int n, ulong at)
        {
            for (int i = 0; i < n; i++)
            {
                ulong ic = at + (ulong)i * 10;
                writer.TimeRead(ic, ic / 10);
                writer.TimeDelivered(ic, ic / 10 + 1);
                writer.SerialInput(ic, serial);
                writer.Entropy(ic, (ushort)i);
            }
        }
        Log(20_000, 0); // warm up: JIT, pooled buffers, the frame list's growth
        long before = GC.GetAllocatedBytesForCurrentThread();
        Log(10_000, 1_000_000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        // Chunks are written as they fill (compressed into pooled buffers): what remains is the odd
        // growth of the frame list, far below a byte per event.
        Assert.True(allocated < 40_000 / 4, $"logging 40,000 events (and writing their chunks) allocated {allocated} bytes");
        Assert.True(writer.Frames.Count > 5);

        using var chunk = new EventChunkWriter();
        for (int i = 0; i < 10_000; i++) { chunk.TimeRead((ulong)i, (ulong)i * 3); chunk.SerialInput((ulong)i, serial); }
        var payload = chunk.Payload.ToArray();
        before = GC.GetAllocatedBytesForCurrentThread();
        var r = new EventChunkReader(payload, 0, 0);
        int count = 0;
        while (r.TryRead(out _)) count++;
        allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(20_000, count);
        Assert.True(allocated == 0, $"decoding 20,000 events allocated {allocated} bytes");
    }
}
