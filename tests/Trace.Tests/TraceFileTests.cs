namespace LiveMigration.Trace.Tests;

public class TraceFileTests
{
    private static byte[] Kv => File.ReadAllBytes(Path.Combine(Repo.Traces, "kv.lmtrace"));

    [Fact]
    public void A_complete_trace_opens_from_its_index_and_the_index_matches_a_scan()
    {
        using var indexed = TraceFile.Open(new MemoryStream(Kv));
        using var scanned = TraceFile.Open(new MemoryStream(Kv), useIndex: false);
        Assert.True(indexed.FromIndex);
        Assert.False(scanned.FromIndex);
        Assert.True(indexed.IsComplete && scanned.IsComplete);
        Assert.Equal(scanned.Frames, indexed.Frames);
        Assert.Equal(scanned.FinalIcount, indexed.FinalIcount);
        Assert.Equal(scanned.Events().Select(e => e.ToString()), indexed.Events().Select(e => e.ToString()));
    }

    [Fact]
    public void A_damaged_index_falls_back_to_a_scan_that_names_the_damage()
    {
        byte[] bad = Kv;
        using var good = TraceFile.Open(new MemoryStream(Kv));
        var index = good.Frames.Single(f => f.Kind == FrameKind.Index);
        bad[index.Offset + TraceFormat.FrameHeaderSize + 2] ^= 0x40;
        var e = Assert.ThrowsAny<TraceFormatException>(() => TraceFile.Open(new MemoryStream(bad)));
        Assert.Equal(index.Offset, e.Offset);
    }

    [Fact]
    public void A_truncated_trace_opens_by_scanning_and_reports_where_it_stops()
    {
        byte[] kv = Kv;
        using var good = TraceFile.Open(new MemoryStream(kv));
        var last = good.Frames[^3]; // the last events frame, before index and end
        using var cut = TraceFile.Open(new MemoryStream(kv.AsSpan(0, (int)last.Offset + 20).ToArray()));
        Assert.False(cut.FromIndex);
        Assert.False(cut.IsComplete);
        Assert.Equal(last.Offset, cut.Truncation!.Offset);
        Assert.Equal(good.Frames.Count - 3, cut.Frames.Count);
    }

    [Fact]
    public void Newer_format_versions_are_refused_with_both_numbers()
    {
        var header = new Schema.TraceHeader { Machine = new Schema.MachineConfigProto { MemorySize = 1 << 20 } };
        var ms = new MemoryStream();
        using (var w = new TraceWriter(ms, header, new TraceWriterOptions { FormatVersion = TraceFormat.CurrentVersion + 1 })) { }
        var e = Assert.ThrowsAny<TraceFormatException>(() => TraceFile.Open(new MemoryStream(ms.ToArray())));
        Assert.Contains($"version {TraceFormat.CurrentVersion + 1}", e.Message);
        Assert.Contains($"reads 1..{TraceFormat.CurrentVersion}", e.Message);
    }
}
