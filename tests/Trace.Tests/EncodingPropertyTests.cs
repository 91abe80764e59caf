using FsCheck;
using FsCheck.Fluent;

namespace LiveMigration.Trace.Tests;

/// <summary>Property tests of the event encoding: whatever is written decodes to the same events.</summary>
public class EncodingPropertyTests
{
    [Fact]
    public void Varint_round_trips()
    {
        Prop.ForAll<ulong>(v =>
        {
            Span<byte> b = stackalloc byte[Varint.MaxLength];
            int n = Varint.Write(b, v);
            int pos = 0;
            return Varint.TryRead(b[..n], ref pos, out ulong back) && back == v && pos == n && n == Varint.Length(v);
        }).QuickCheckThrowOnFailure();
        Prop.ForAll<long>(v => Varint.UnZigZag(Varint.ZigZag(v)) == v).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Event_chunks_round_trip()
    {
        Prop.ForAll<(byte Kind, uint Delta, ulong Value, byte[] Data)[]>(items =>
        {
            using var w = new EventChunkWriter(16);
            var expected = new List<TraceEvent>();
            ulong icount = 1000;
            foreach (var (k, delta, value, data) in items)
            {
                icount += delta;
                switch (k % 6)
                {
                    case 0: w.TimeDelivered(icount, value); expected.Add(new(icount, EventKind.TimeDelivered, value, 0, default)); break;
                    case 1: w.TimeRead(icount, value); expected.Add(new(icount, EventKind.TimeRead, value, 0, default)); break;
                    case 2:
                        if (data == null || data.Length == 0) continue;
                        w.SerialInput(icount, data); expected.Add(new(icount, EventKind.SerialInput, 0, 0, data)); break;
                    case 3: w.Entropy(icount, (ushort)value); expected.Add(new(icount, EventKind.Entropy, (ushort)value, 0, default)); break;
                    case 4: w.StateDigest(icount, value); expected.Add(new(icount, EventKind.StateDigest, value, 0, default)); break;
                    case 5: w.CheckpointMarker(icount, value); expected.Add(new(icount, EventKind.CheckpointMarker, value, 0, default)); break;
                }
            }
            var r = new EventChunkReader(w.Payload.ToArray(), w.Count == 0 ? 0 : w.FirstIcount, 0);
            var got = new List<TraceEvent>();
            while (r.TryRead(out var e)) got.Add(e);
            return got.Count == expected.Count && got.Zip(expected).All(p =>
                p.First.Icount == p.Second.Icount && p.First.Kind == p.Second.Kind && p.First.Value == p.Second.Value &&
                p.First.Data.Span.SequenceEqual(p.Second.Data.Span));
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Random_bytes_never_crash_the_chunk_decoder()
    {
        Prop.ForAll<byte[]>(bytes =>
        {
            if (bytes == null) return true;
            var r = new EventChunkReader(bytes, 0, 0);
            try { while (r.TryRead(out _)) { } }
            catch (TraceFormatException) { }
            return true;
        }).QuickCheckThrowOnFailure();
    }
}
