using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.State;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Memory;

/// <summary>
/// Post-copy at the machine level: a destination resumes with CPU and device state only, every
/// non-zero page absent; pages arrive on demand (and by a background push) and the run must end
/// exactly as an uninterrupted one. An unavailable page stops the machine before the instruction.
/// </summary>
public class PostcopyPageTests
{
    private static (Machine Source, byte[] Devices, byte[][] Pages) RunSourceTo(string guest, ulong icount, TestHostPort port)
    {
        var m = new Machine(new MachineConfig(), port);
        ElfLoader.Load(m, File.ReadAllBytes(Repo.Guest(guest)));
        Assert.Equal(StopReason.InstructionLimit, m.Run(icount));
        var pages = new byte[m.Memory.PageCount][];
        for (int p = 0; p < pages.Length; p++)
            if (!m.Memory.IsZeroPage(p)) pages[p] = m.Memory.PageSpan(p).ToArray();
        return (m, m.SaveDeviceState(), pages);
    }

    private static Machine Destination(byte[] devices, byte[][] pages, TestHostPort port, bool compile)
    {
        var d = new Machine(new MachineConfig(), port, compile, EagerCompile.Threshold);
        d.RestoreDeviceState(new StateReader(devices));
        for (int p = 0; p < pages.Length; p++)
            if (pages[p] != null) d.Memory.MarkAbsentRange(p, 1);
        return d;
    }

    [Theory]
    [InlineData("dirty_small", false)]
    [InlineData("dirty_small", true)]
    [InlineData("compute_small", true)]
    public void DemandFetchedRunEndsLikeAnUninterruptedOne(string guest, bool compile)
    {
        var reference = new TestHostPort();
        using var whole = new Machine(new MachineConfig(), reference);
        ElfLoader.Load(whole, File.ReadAllBytes(Repo.Guest(guest)));
        Assert.Equal(StopReason.Exited, whole.Run());

        var sourcePort = new TestHostPort();
        var (source, devices, pages) = RunSourceTo(guest, 300_000, sourcePort);
        using var _ = source;
        var destPort = new TestHostPort();
        using var dest = Destination(devices, pages, destPort, compile);
        int fetched = 0;
        dest.Memory.PageFetcher = page => { fetched++; return dest.Memory.SupplyPage(page, pages[page]); };

        Assert.Equal(StopReason.Exited, dest.Run());
        Assert.Equal(whole.ExitCode, dest.ExitCode);
        Assert.Equal(reference.Output, sourcePort.Output.Concat(destPort.Output).ToArray());
        Assert.True(fetched > 0);
        Assert.Equal(whole.ComputeDigest(), dest.ComputeDigest()); // fetches the rest first
        Assert.Equal(0, dest.Memory.AbsentPageCount);
    }

    [Fact]
    public void BackgroundPushAndDemandFetchTogetherSendEachPageOnce()
    {
        var (source, devices, pages) = RunSourceTo("dirty_small", 300_000, new TestHostPort());
        using var _ = source;
        using var dest = Destination(devices, pages, new TestHostPort(), compile: true);
        int supplied = 0, refused = 0;
        void Give(int page)
        {
            if (dest.Memory.SupplyPage(page, pages[page])) Interlocked.Increment(ref supplied);
            else Interlocked.Increment(ref refused);
        }
        dest.Memory.PageFetcher = page => { Give(page); return true; };
        var push = new Thread(() =>
        {
            for (int p = pages.Length - 1; p >= 0; p--)
                if (pages[p] != null && dest.Memory.IsAbsent(p)) Give(p);
        });
        push.Start();
        Assert.Equal(StopReason.Exited, dest.Run());
        push.Join();
        dest.Memory.EnsureAllPresent();
        Assert.Equal(pages.Count(p => p != null), supplied); // each page landed exactly once
        Assert.Equal(0, dest.Memory.AbsentPageCount);
    }

    [Fact]
    public void AnUnavailablePageStopsBeforeTheInstructionAndARetryContinues()
    {
        var reference = new TestHostPort();
        using var whole = new Machine(new MachineConfig(), reference);
        ElfLoader.Load(whole, File.ReadAllBytes(Repo.Guest("dirty_small")));
        Assert.Equal(StopReason.Exited, whole.Run());

        var (source, devices, pages) = RunSourceTo("dirty_small", 300_000, new TestHostPort());
        using var _ = source;
        using var dest = Destination(devices, pages, new TestHostPort(), compile: false);
        bool linkUp = false;
        int stops = 0;
        dest.Memory.PageFetcher = page => linkUp && dest.Memory.SupplyPage(page, pages[page]);
        while (true)
        {
            ulong icount = dest.Icount, pc = dest.Pc;
            var reason = dest.Run();
            if (reason == StopReason.Exited) break;
            Assert.Equal(StopReason.PageUnavailable, reason);
            stops++;
            if (stops == 1)
            {
                Assert.Equal(300_000UL, dest.Icount); // not one instruction ran without its page
                Assert.Equal(pc, dest.Pc);
            }
            linkUp = stops > 3; // the link "comes back" after a few failed attempts
        }
        Assert.True(stops >= 1);
        Assert.Equal(whole.ComputeDigest(), dest.ComputeDigest());
    }

    [Fact]
    public void Touched_runs_and_absent_ranges_cover_exactly_their_pages()
    {
        using var m = new LiveMigration.Guest.Memory.GuestMemory(1 << 20); // 256 pages
        var data = new byte[LiveMigration.Guest.Memory.GuestMemory.PageSize];
        data[7] = 1;
        foreach (int p in new[] { 0, 1, 2, 5, 255 }) m.WritePage(p, data);
        Assert.Equal([(0, 3), (5, 1), (255, 1)], m.TouchedRuns());
        m.MarkAbsentRange(1, 3);
        m.MarkAbsentRange(2, 3); // overlapping: pages already absent count once
        Assert.Equal(4, m.AbsentPageCount);
        Assert.False(m.IsAbsent(0));
        Assert.True(m.IsAbsent(1) && m.IsAbsent(4));
        Assert.False(m.IsAbsent(5));
    }

    /// <summary>A supply wakes only the threads waiting for that page; each waiter still sees its own page arrive.</summary>
    [Fact]
    public void Waiters_wake_when_their_page_arrives_and_only_then()
    {
        using var m = new LiveMigration.Guest.Memory.GuestMemory(1 << 20);
        m.MarkAbsentRange(0, 8);
        var data = new byte[LiveMigration.Guest.Memory.GuestMemory.PageSize];
        data[0] = 9;
        var waitFor3 = Task.Run(() => m.WaitForPage(3, TimeSpan.FromSeconds(20)));
        var waitFor5 = Task.Run(() => m.WaitForPage(5, TimeSpan.FromSeconds(20)));
        Thread.Sleep(100);
        Assert.True(m.SupplyPage(4, data)); // nobody waits for it
        Assert.True(m.SupplyPage(3, data));
        Assert.True(waitFor3.Wait(TimeSpan.FromSeconds(10)) && waitFor3.Result);
        Assert.False(waitFor5.IsCompleted);
        Assert.True(m.SupplyPage(5, data));
        Assert.True(waitFor5.Wait(TimeSpan.FromSeconds(10)) && waitFor5.Result);
        Assert.False(m.WaitForPage(6, TimeSpan.FromMilliseconds(50))); // times out: still absent
        Assert.True(m.WaitForPage(4, TimeSpan.Zero)); // already here
    }
}
