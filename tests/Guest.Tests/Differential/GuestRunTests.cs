using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Differential;

/// <summary>Our machine alone on each finite guest: it must exit with pass and print the expected shape.</summary>
public class GuestRunTests
{
    [Theory]
    [InlineData("hello", "Hello from LiveMigration guest!\n")]
    [InlineData("compute_small", "compute iters 150000 checksum 0x")]
    [InlineData("dirty_small", "dirty ws 262144 writes 200000 acc 0x")]
    [InlineData("idle", "tick 1\ntick 2\ntick 3\n")]
    [InlineData("traps", "traps test\n")]
    [InlineData("kv", "kv ready\nOK\nOK\n1\ntwo words\nNOTFOUND\nOK\nNOTFOUND\nkeys 1 sets 2 gets 3 dels 2\nERR\nERR\nOK\n3\nBYE\n")]
    public void GuestPasses(string guest, string expectedPrefix)
    {
        var r = GuestRun.Run(guest);
        Assert.Equal(StopReason.Exited, r.Reason);
        Assert.StartsWith(expectedPrefix, r.Text);
        Assert.Equal(0, r.ExitCode);
    }

    [Fact]
    public void TrapsGuestReportsNoBadChecks()
    {
        var r = GuestRun.Run("traps");
        Assert.EndsWith("traps done\n", r.Text);
        Assert.DoesNotContain("BAD", r.Text);
    }

    [Theory]
    [InlineData("compute_small")]
    [InlineData("kv")]
    public void RunsAreDeterministic(string guest)
    {
        var a = GuestRun.Run(guest);
        var b = GuestRun.Run(guest);
        Assert.Equal(a.Output, b.Output);
        Assert.Equal(a.Icount, b.Icount);
        Assert.Equal(a.Digest, b.Digest);
    }
}
