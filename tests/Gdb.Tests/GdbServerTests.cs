using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using LiveMigration.Replayer;
using LiveMigration.Replayer.Gdb;

namespace LiveMigration.Gdb.Tests;

/// <summary>The server at the packet level: what gdb's side of the protocol sees.</summary>
public class GdbServerTests
{
    [Fact]
    public void PacketsForFeaturesRegistersAndMemory()
    {
        using var file = Recordings.Open("debugme");
        using var dbg = new ReplayDebugger(file, new ReplayOptions());
        var cmd = new GdbCommands(dbg, new ConcurrentQueue<string>());
        string Ask(string p) => cmd.Handle(p, out _)!;

        string supported = Ask("qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+");
        foreach (var f in new[] { "PacketSize=", "qXfer:features:read+", "ReverseStep+", "ReverseContinue+", "QStartNoAckMode+" })
            Assert.Contains(f, supported);

        // The target description, read in small pieces, is the whole XML.
        var xml = new StringBuilder();
        for (int off = 0; ; off += 40)
        {
            string part = Ask($"qXfer:features:read:target.xml:{off:x},28");
            xml.Append(part[1..]);
            if (part[0] == 'l') break;
        }
        Assert.Equal(TargetDescription.Xml, xml.ToString());
        Assert.Contains("org.gnu.gdb.riscv.csr", TargetDescription.Xml);
        Assert.Contains("<reg name=\"mstatus\" bitsize=\"64\" regnum=\"833\"", TargetDescription.Xml); // 65 + 0x300

        Assert.Equal("S05", Ask("?"));
        Assert.Equal(RspFraming.U64Le(dbg.Machine.Pc), Ask("p20"));
        Assert.Equal(RspFraming.U64Le(TargetDescription.Misa), Ask($"p{65 + 0x301:x}"));
        Assert.Equal(33 * 16, Ask("g").Length);
        Assert.Equal("xxxxxxxxxxxxxxxx", Ask("p21")); // ft0: no FPU
        Assert.Equal(8, Ask($"m{dbg.Machine.Pc:x},4").Length);
        Assert.Equal("E14", Ask("m10,4"));
        Assert.Equal("1", Ask("qAttached"));
        Assert.Equal("", Ask("vMustReplyEmpty"));

        Assert.Equal("T05", Ask("s"));
        Assert.Equal(1UL, dbg.Icount);
        Assert.Equal("T05", Ask("bs"));
        Assert.Equal(0UL, dbg.Icount);
        Assert.Equal("T05replaylog:begin;", Ask("bs"));
        Assert.Equal(RspFraming.HexText("icount 0\n"), Ask("qRcmd," + RspFraming.HexText("icount")));
        Assert.Equal("OK", Ask("Z2,80001000,8"));
        Assert.StartsWith("T05watch:80001000;", Ask("c"));
        Assert.Equal("OK", Ask("z2,80001000,8"));
        Assert.Equal("T05replaylog:end;", Ask("c"));
        Assert.False(dbg.Forked);
    }

    [Fact]
    public void AnInterruptByteStopsALongContinue()
    {
        using var file = Recordings.Open("compute");
        using var dbg = new ReplayDebugger(file, new ReplayOptions());
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var serving = Task.Run(() => new GdbServer(dbg, _ => { }).ServeOne(listener));
        using var client = new TcpClient();
        client.Connect((IPEndPoint)listener.LocalEndpoint);
        var s = client.GetStream();
        s.ReadTimeout = 30_000;
        string Read()
        {
            var sb = new StringBuilder();
            int b;
            while ((b = s.ReadByte()) != '$') if (b < 0) throw new EndOfStreamException();
            while ((b = s.ReadByte()) != '#') sb.Append((char)b);
            s.ReadByte(); s.ReadByte();
            return sb.ToString();
        }
        s.Write(RspFraming.Encode("QStartNoAckMode"));
        Assert.Equal('+', (char)s.ReadByte());
        Assert.Equal("OK", Read());
        s.Write(RspFraming.Encode("c"));
        Thread.Sleep(100);
        s.WriteByte(0x03);
        Assert.Equal("T02", Read());
        Assert.InRange(dbg.Icount, 1UL, file.FinalIcount - 1);
        s.Write(RspFraming.Encode("D"));
        Assert.Equal("OK", Read());
        Assert.True(serving.Wait(10_000));
        listener.Stop();
    }
}
