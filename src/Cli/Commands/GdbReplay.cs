using System.Net.Sockets;
using LiveMigration.Replayer;
using LiveMigration.Replayer.Gdb;
using LiveMigration.Trace;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm replay TRACE --gdb HOST:PORT`: waits for gdb and serves the recorded run to it, forwards and backwards.</summary>
public static class GdbReplay
{
    public static int Execute(string path, string endpoint, bool verify)
    {
        using var file = TraceFile.Open(path);
        using var stdout = Console.OpenStandardOutput();
        var options = new ReplayOptions { Verify = verify, Output = b => { stdout.WriteByte(b); if (b == '\n') stdout.Flush(); } };
        using var debugger = new ReplayDebugger(file, options);
        var listener = new TcpListener(GdbServer.ParseEndpoint(endpoint));
        listener.Start();
        try
        {
            Console.Error.WriteLine($"lm: gdb server on {listener.LocalEndpoint}, replaying {path} from icount {debugger.Icount}; " +
                                    $"connect with: gdb-multiarch -ex 'set architecture riscv:rv64' -ex 'target remote {listener.LocalEndpoint}' GUEST.elf");
            new GdbServer(debugger).ServeOne(listener);
        }
        finally { listener.Stop(); }
        stdout.Flush();
        Console.Error.WriteLine($"lm: debugging session ended at icount {debugger.Icount}; {debugger.DigestsVerified} state digest checks passed" +
                                (debugger.Forked ? $"; the replay was forked into a live session at icount {debugger.ForkIcount}" : ""));
        return debugger.Divergence != null ? ReplayCommand.DivergedExit : 0;
    }
}
