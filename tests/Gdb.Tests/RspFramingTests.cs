using System.Text;
using LiveMigration.Replayer.Gdb;

namespace LiveMigration.Gdb.Tests;

public class RspFramingTests
{
    private static List<RspItem> Decode(string wire, int split = int.MaxValue)
    {
        var d = new RspDecoder();
        var items = new List<RspItem>();
        var bytes = Encoding.Latin1.GetBytes(wire);
        for (int at = 0; at < bytes.Length; at += split)
            foreach (var b in bytes.AsSpan(at, Math.Min(split, bytes.Length - at)))
                if (d.Feed(b) is { } item) items.Add(item);
        return items;
    }

    [Fact]
    public void EncodeAddsTheChecksumModulo256()
    {
        Assert.Equal("$OK#9a", Encoding.Latin1.GetString(RspFraming.Encode("OK")));
        Assert.Equal("$#00", Encoding.Latin1.GetString(RspFraming.Encode("")));
        Assert.Equal("$qSupported#37", Encoding.Latin1.GetString(RspFraming.Encode("qSupported")));
    }

    [Fact]
    public void ReservedCharactersAreEscapedAndDecodeBack()
    {
        string payload = "a$b#c}d*e";
        var wire = Encoding.Latin1.GetString(RspFraming.Encode(payload));
        Assert.Equal("$a}\u0004b}\u0003c}]d}\u000ae#", wire[..^2]);
        var items = Decode(wire);
        Assert.Equal([new RspItem(RspItemKind.Packet, payload)], items);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(1000)]
    public void AcksInterruptsAndPacketsInAnySplit(int split)
    {
        string m = Encoding.Latin1.GetString(RspFraming.Encode("m80000000,4"));
        var items = Decode("+$g#67-\u0003" + m + "+", split);
        Assert.Equal(
        [
            new RspItem(RspItemKind.Ack), new RspItem(RspItemKind.Packet, "g"), new RspItem(RspItemKind.Nack),
            new RspItem(RspItemKind.Interrupt), new RspItem(RspItemKind.Packet, "m80000000,4"), new RspItem(RspItemKind.Ack),
        ], items);
    }

    [Fact]
    public void ABadChecksumIsReportedNotAccepted()
    {
        var items = Decode("$g#00$g#67");
        Assert.Equal(RspItemKind.BadChecksum, items[0].Kind);
        Assert.Equal(new RspItem(RspItemKind.Packet, "g"), items[1]);
    }

    [Fact]
    public void HexHelpersRoundTrip()
    {
        Assert.Equal("0100000000000080", RspFraming.U64Le(0x8000_0000_0000_0001));
        Assert.Equal(new byte[] { 0xde, 0xad }, RspFraming.FromHex("dEaD"));
        Assert.Equal("69636f756e74", RspFraming.HexText("icount"));
    }
}
