using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using LiveMigration.Guest.Debug;

namespace LiveMigration.Replayer.Gdb;

/// <summary>The packet handlers: one request in, one reply out (testable without a socket).</summary>
public sealed class GdbCommands(ReplayDebugger debugger, ConcurrentQueue<string> notices)
{
    public enum After { Continue, Close }

    private const int PacketSize = 0x4000;
    private TargetStop? _lastStop;
    private readonly List<string> _console = [];

    /// <summary>O packets (console output) to send before the reply just produced.</summary>
    public IReadOnlyList<string> TakeConsoleOutput()
    {
        var list = _console.ToList();
        _console.Clear();
        return list;
    }

    private void FlushNotices()
    {
        while (notices.TryDequeue(out var s)) _console.Add("O" + RspFraming.HexText("lm: " + s + "\n"));
    }

    /// <summary>The reply to <paramref name="packet"/>, or null for none (k).</summary>
    public string? Handle(string packet, out After after)
    {
        after = After.Continue;
        try { return Dispatch(packet, ref after); }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentException or IndexOutOfRangeException)
        {
            return "E01";
        }
    }

    private string? Dispatch(string p, ref After after)
    {
        if (p.Length == 0) return "";
        switch (p[0])
        {
            case '?': return StopReply(_lastStop ?? new TargetStop(StopKind.Step, debugger.Icount), initial: _lastStop == null);
            case 'g': return ReadAllRegisters();
            case 'G': return WriteAllRegisters(p[1..]);
            case 'p': return ReadRegister(p[1..]);
            case 'P': return WriteRegister(p[1..]);
            case 'm': return ReadMemory(p[1..]);
            case 'M': return WriteMemory(p[1..]);
            case 'X': return ""; // binary writes: gdb falls back to M
            case 'Z': return Point(p[1..], insert: true);
            case 'z': return Point(p[1..], insert: false);
            case 's': return Resume(debugger.StepForward);
            case 'c': return Resume(debugger.Continue);
            case 'b' when p == "bs": return Resume(debugger.ReverseStep);
            case 'b' when p == "bc": return Resume(debugger.ReverseContinue);
            case 'H': return "OK";
            case 'T': return "OK";
            case 'D': after = After.Close; return "OK";
            case 'k': after = After.Close; return null;
        }
        if (p.StartsWith("qSupported")) return $"PacketSize={PacketSize:x};qXfer:features:read+;QStartNoAckMode+;ReverseStep+;ReverseContinue+";
        if (p == "QStartNoAckMode") return "OK";
        if (p.StartsWith("qXfer:features:read:")) return ReadFeatures(p["qXfer:features:read:".Length..]);
        if (p == "qAttached") return "1";
        if (p == "qC") return "QC1";
        if (p == "qfThreadInfo") return "m1";
        if (p == "qsThreadInfo") return "l";
        if (p == "vCont?") return "vCont;c;C;s;S";
        if (p.StartsWith("vCont;"))
        {
            char action = p[6];
            return action is 's' or 'S' ? Resume(debugger.StepForward) : action is 'c' or 'C' ? Resume(debugger.Continue) : "";
        }
        if (p.StartsWith("qRcmd,")) return Monitor(Encoding.UTF8.GetString(RspFraming.FromHex(p.AsSpan(6))).Trim());
        return ""; // not supported
    }

    private string Resume(Func<TargetStop> run)
    {
        TargetStop stop;
        try { stop = run(); }
        catch (InvalidOperationException e)
        {
            notices.Enqueue(e.Message);
            stop = new TargetStop(StopKind.Diverged, debugger.Icount, Message: e.Message);
        }
        _lastStop = stop;
        FlushNotices();
        return StopReply(stop, initial: false);
    }

    private string StopReply(TargetStop stop, bool initial)
    {
        if (initial) return "S05";
        return stop.Kind switch
        {
            StopKind.Interrupted => "T02",
            StopKind.Watchpoint => $"T05{WatchName(stop.Watch.Kind)}:{stop.Watch.Address:x};",
            StopKind.ReplayBegin => "T05replaylog:begin;",
            StopKind.ReplayEnd => "T05replaylog:end;",
            StopKind.Exited => $"W{(byte)(debugger.Machine.ExitCode ?? 0):x2}",
            _ => "T05",
        };
    }

    private static string WatchName(WatchKind kind) => kind switch { WatchKind.Read => "rwatch", WatchKind.Access => "awatch", _ => "watch" };

    private string ReadAllRegisters()
    {
        var sb = new StringBuilder(33 * 16);
        for (int r = 0; r <= TargetDescription.PcRegnum; r++) sb.Append(RspFraming.U64Le(TargetDescription.Read(debugger.Machine, r)!.Value));
        return sb.ToString();
    }

    private string WriteAllRegisters(string hex)
    {
        var bytes = RspFraming.FromHex(hex);
        debugger.Fork();
        for (int r = 0; r <= TargetDescription.PcRegnum && (r + 1) * 8 <= bytes.Length; r++)
            TargetDescription.Write(debugger.Machine, r, BitConverter.ToUInt64(bytes, r * 8));
        return "OK";
    }

    private string ReadRegister(string arg)
    {
        int regnum = int.Parse(arg, NumberStyles.HexNumber);
        return TargetDescription.Read(debugger.Machine, regnum) is { } v ? RspFraming.U64Le(v) : "xxxxxxxxxxxxxxxx";
    }

    private string WriteRegister(string arg)
    {
        int eq = arg.IndexOf('=');
        int regnum = int.Parse(arg.AsSpan(0, eq), NumberStyles.HexNumber);
        var bytes = RspFraming.FromHex(arg.AsSpan(eq + 1));
        if (bytes.Length != 8) return "E02";
        if (TargetDescription.Read(debugger.Machine, regnum) == BitConverter.ToUInt64(bytes)) return "OK"; // no change, no fork
        debugger.Fork();
        return TargetDescription.Write(debugger.Machine, regnum, BitConverter.ToUInt64(bytes)) ? "OK" : "E03";
    }

    private static (ulong Address, int Length) AddressLength(ReadOnlySpan<char> s)
    {
        int comma = s.IndexOf(',');
        return (ulong.Parse(s[..comma], NumberStyles.HexNumber), int.Parse(s[(comma + 1)..], NumberStyles.HexNumber));
    }

    private string ReadMemory(string arg)
    {
        var (address, length) = AddressLength(arg);
        if (length == 0) return "";
        var bytes = new byte[Math.Min(length, PacketSize / 2)];
        int read = Access(address, bytes, write: false);
        return read == 0 ? "E14" : RspFraming.ToHex(bytes.AsSpan(0, read)); // a short read: gdb asks again for the rest
    }

    private string WriteMemory(string arg)
    {
        int colon = arg.IndexOf(':');
        var (address, length) = AddressLength(arg.AsSpan(0, colon));
        var bytes = RspFraming.FromHex(arg.AsSpan(colon + 1));
        if (bytes.Length != length) return "E14";
        if (length == 0) return "OK";
        var current = new byte[length];
        if (Access(address, current, write: false) != length) return "E14";
        if (current.AsSpan().SequenceEqual(bytes)) return "OK"; // no change, no fork
        debugger.Fork();
        Access(address, bytes, write: true);
        return "OK";
    }

    /// <summary>
    /// Reads or writes guest memory at a virtual address (gdb's addresses are the guest's: through its
    /// page tables when paging is on), page by page; returns how many bytes from the start were mapped.
    /// </summary>
    private int Access(ulong address, Span<byte> data, bool write)
    {
        var machine = debugger.Machine;
        int done = 0;
        while (done < data.Length)
        {
            ulong va = address + (ulong)done;
            int chunk = (int)Math.Min((ulong)(data.Length - done), 4096 - (va & 4095));
            if (!machine.TryTranslateForDebugger(va, out ulong pa) || !machine.Memory.Contains(pa, chunk)) break;
            if (write) machine.Memory.Write(pa, data.Slice(done, chunk));
            else machine.Memory.Read(pa, data.Slice(done, chunk));
            done += chunk;
        }
        return done;
    }

    private string Point(string arg, bool insert)
    {
        var parts = arg.Split(',');
        int type = int.Parse(parts[0]);
        ulong address = ulong.Parse(parts[1], NumberStyles.HexNumber);
        ulong length = ulong.Parse(parts[2].Split(';')[0], NumberStyles.HexNumber);
        switch (type)
        {
            case 0 or 1:
                if (insert) debugger.AddBreakpoint(address); else debugger.RemoveBreakpoint(address);
                return "OK";
            case 2 or 3 or 4:
                if (length == 0) return "E01";
                var w = new Watchpoint(address, length, type switch { 2 => WatchKind.Write, 3 => WatchKind.Read, _ => WatchKind.Access });
                if (insert) debugger.AddWatchpoint(w); else debugger.RemoveWatchpoint(w);
                return "OK";
            default:
                return "";
        }
    }

    private string ReadFeatures(string arg)
    {
        // target.xml:OFFSET,LENGTH
        int colon = arg.IndexOf(':');
        if (arg[..colon] != "target.xml") return "E00";
        var (offset, length) = AddressLength(arg.AsSpan(colon + 1));
        string xml = TargetDescription.Xml;
        if (offset >= (ulong)xml.Length) return "l";
        int n = (int)Math.Min((ulong)length, (ulong)xml.Length - offset);
        return ((int)offset + n >= xml.Length ? "l" : "m") + xml.Substring((int)offset, n);
    }

    private string Monitor(string command)
    {
        string text;
        switch (command)
        {
            case "icount":
                text = $"icount {debugger.Icount}\n";
                break;
            case "checkpoint":
                if (debugger.Forked) { text = "the replay is forked into a live session: checkpoints are of the recorded run only\n"; break; }
                var c = debugger.TakeUserCheckpoint();
                text = $"checkpoint at icount {c.Icount} ({c.NewPages * 4} KiB new); {debugger.Checkpoints.Count} checkpoints, {debugger.Checkpoints.Bytes >> 20} MiB\n";
                break;
            case "checkpoints":
                var sb = new StringBuilder();
                foreach (var k in debugger.Checkpoints.All) sb.Append($"  icount {k.Icount} ({k.NewPages * 4} KiB new)\n");
                text = sb.ToString();
                break;
            case "status":
                text = $"icount {debugger.Icount}, pc 0x{debugger.Machine.Pc:x}, {(debugger.Forked ? $"live fork since icount {debugger.ForkIcount}" : "replaying the recording")}, " +
                       $"{debugger.DigestsVerified} state digest checks passed\n";
                break;
            default:
                text = "monitor commands: icount, checkpoint, checkpoints, status\n";
                break;
        }
        FlushNotices();
        return RspFraming.HexText(text);
    }
}
