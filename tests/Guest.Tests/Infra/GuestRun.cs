using System.Text;
using LiveMigration.Guest.Loader;

namespace LiveMigration.Guest.Tests.Infra;

/// <summary>Runs a guest ELF in-process on our machine with a deterministic port.</summary>
public static class GuestRun
{
    /// <summary>The kv script every kv test feeds (ends in QUIT so the guest exits).</summary>
    public const string KvScript =
        "SET alpha 1\nSET beta two words\r\nGET alpha\nGET beta\nGET gamma\nDEL alpha\nDEL alpha\n" +
        "STATS\nFROB x\nSET k " + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0\n" +
        "SET beta 3\nGET beta\nQUIT\n";

    public static TestHostPort PortFor(string guest, string? input = null)
    {
        var port = new TestHostPort();
        input ??= guest == "kv" ? KvScript : null;
        if (input != null) port.Input(0, input);
        return port;
    }

    public static Machine Load(string guest, TestHostPort port)
    {
        var m = new Machine(new MachineConfig(), port);
        ElfLoader.Load(m, File.ReadAllBytes(Repo.Guest(guest)));
        return m;
    }

    public sealed record Result(byte[] Output, int? ExitCode, StopReason Reason, ulong Icount, ulong Digest)
    {
        public string Text => Encoding.ASCII.GetString(Output);
    }

    public static Result Run(string guest, string? input = null, ulong maxIcount = 2_000_000_000)
    {
        var port = PortFor(guest, input);
        using var m = Load(guest, port);
        var reason = m.Run(maxIcount);
        return new Result(port.Output, m.ExitCode, reason, m.Icount, m.ComputeDigest());
    }
}
