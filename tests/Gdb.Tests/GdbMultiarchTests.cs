using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using LiveMigration.Replayer;
using LiveMigration.Trace;
using LiveMigration.Replayer.Gdb;
using Xunit.Abstractions;

namespace LiveMigration.Gdb.Tests;

/// <summary>The real gdb-multiarch, in batch mode, against the server replaying a recording of guests/debugme.c.</summary>
public class GdbMultiarchTests(ITestOutputHelper log)
{
    private sealed record Session(string Gdb, List<string> Notices, ReplayDebugger Debugger, string GuestOutput);

    private Session RunGdb(params string[] commands) => RunGdb(Recordings.Open("debugme"), Repo.Guest("debugme"), commands);

    private Session RunGdb(TraceFile trace, string symbols, params string[] commands)
    {
        using var file = trace;
        var output = new MemoryStream();
        using var dbg = new ReplayDebugger(file, new ReplayOptions { Output = output.WriteByte });
        var notices = new List<string>();
        var server = new GdbServer(dbg, s => { lock (notices) notices.Add(s); });
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var serving = Task.Run(() => server.ServeOne(listener));
        var args = new List<string> { "-nx", "-batch", "-ex", "set architecture riscv:rv64", "-ex", $"target remote 127.0.0.1:{port}" };
        foreach (var c in commands) { args.Add("-ex"); args.Add(c); }
        args.Add(symbols);
        var psi = new ProcessStartInfo("gdb-multiarch", args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var gdb = Process.Start(psi)!;
        var stderr = gdb.StandardError.ReadToEndAsync();
        string stdout = gdb.StandardOutput.ReadToEnd();
        Assert.True(gdb.WaitForExit(60_000), "gdb did not finish in 60 s");
        string text = stdout + stderr.Result;
        log.WriteLine(text);
        Assert.True(serving.Wait(30_000), "the server did not end after gdb left");
        listener.Stop();
        return new Session(text, notices, dbg, System.Text.Encoding.ASCII.GetString(output.ToArray()));
    }

    /// <summary>
    /// A Linux boot under gdb with the vmlinux symbols: a breakpoint on a kernel function (a virtual
    /// address) stops there, memory is read through the guest's page tables, and stepping runs both ways.
    /// </summary>
    [RequiresGdbFact]
    public void LinuxKernelBreakReadThroughPageTablesAndReverseStep()
    {
        string vmlinux = Path.Combine(Path.GetDirectoryName(LiveMigration.Tests.Shared.RepoPaths.LinuxGuest().Image)!, "vmlinux");
        var s = RunGdb(Recordings.Linux(), vmlinux, "break kernel_init", "continue", "x/s (char*)&linux_banner", "x/i $pc",
                       "stepi", "stepi", "reverse-stepi", "info registers pc", "monitor icount");
        Assert.Matches(@"Breakpoint 1, 0xffffffff[0-9a-f]+ in kernel_init \(\)", s.Gdb);
        Assert.Contains("<linux_banner>:\t\"Linux version 6.1.", s.Gdb);
        Assert.Matches(@"=> 0xffffffff[0-9a-f]+ <kernel_init>:", s.Gdb);
        Assert.Matches(@"pc\s+0xffffffff[0-9a-f]+\s+0xffffffff[0-9a-f]+ <kernel_init\+\d+>", s.Gdb);
        Assert.Null(s.Debugger.Divergence);
    }

    [RequiresGdbFact]
    public void BreakOnAFunctionPrintAVariableAndStep()
    {
        var s = RunGdb("break scale", "continue", "print counter", "print factor", "next", "next", "print counter",
                       "info registers pc mstatus mcause", "stepi", "monitor icount");
        Assert.Contains("Breakpoint 1, scale (factor=3) at debugme.c:16", s.Gdb);
        Assert.Contains("$1 = 37", s.Gdb);
        Assert.Contains("$2 = 3", s.Gdb);
        Assert.Contains("$3 = 111", s.Gdb);
        Assert.Matches(@"pc\s+0x8000", s.Gdb);
        Assert.Matches(@"mstatus\s+0x", s.Gdb);
        Assert.Matches(@"icount \d+", s.Gdb);
    }

    [RequiresGdbFact]
    public void WatchAVariableAndReverseContinueToTheWriteThatChangedIt()
    {
        var s = RunGdb("break scale", "continue", "delete", "watch counter", "reverse-continue", "print counter", "bt 1",
                       "reverse-continue", "print counter", "continue", "print counter", "reverse-stepi", "reverse-finish",
                       "delete", "continue");
        // Going back from scale(): the last write was bump(8): 29 -> 37, seen backwards as 37 -> 29.
        Assert.Contains("Old value = 37\nNew value = 29", s.Gdb);
        Assert.Contains("in bump (by=8) at debugme.c:11", s.Gdb);
        Assert.Contains("$1 = 29", s.Gdb);
        Assert.Contains("Old value = 29\nNew value = 22", s.Gdb);
        Assert.Contains("$2 = 22", s.Gdb);
        // Forward again: the same write, 22 -> 29.
        Assert.Contains("Old value = 22\nNew value = 29", s.Gdb);
        Assert.Contains("$3 = 29", s.Gdb);
        Assert.Contains("in main () at debugme.c:25", s.Gdb); // reverse-finish: back to the call of bump(7)
        // The end of the replay, reached after all of that, is faithful.
        Assert.Contains("No more reverse-execution history", s.Gdb);
        Assert.Contains(s.Notices, n => n.Contains("faithful"));
        Assert.Null(s.Debugger.Divergence);
        Assert.Contains("debugme counter 211", s.GuestOutput);
    }

    [RequiresGdbFact]
    public void ReadAndAccessWatchpoints()
    {
        var s = RunGdb("break scale", "continue", "rwatch counter", "continue", "delete", "awatch history[0]", "reverse-continue");
        Assert.Contains("Hardware read watchpoint 2: counter", s.Gdb);
        Assert.Contains("Value = 37\n0x0000000080000074 in scale (factor=3)", s.Gdb);
        Assert.Contains("Hardware access (read/write) watchpoint 3: history[0]", s.Gdb);
        Assert.Contains("Old value = 2\nNew value = 0", s.Gdb); // back past history[0] = counter in main
        Assert.Contains("in main () at debugme.c:26", s.Gdb);
    }

    [RequiresGdbFact]
    public void AWriteFromGdbForksTheReplayIntoALiveSession()
    {
        var s = RunGdb("break scale", "continue", "set var counter = 5", "monitor status", "delete", "continue");
        Assert.Contains(s.Notices, n => n.Contains("replay forked into a live session at icount"));
        Assert.Contains("live fork since icount", s.Gdb);
        Assert.Contains("lm: replay forked into a live session", s.Gdb); // the console message gdb printed
        Assert.Contains("exited normally", s.Gdb);
        Assert.Contains("debugme counter 115", s.GuestOutput); // 5 * 3 + 100: the live run, not the recording
    }
}
