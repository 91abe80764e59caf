using LiveMigration.Guest.State;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.State;

/// <summary>
/// rr-style checkpoint tests: hop from machine to machine through saved state at seeded random
/// strides; and snapshots written out on another thread while the guest keeps running.
/// </summary>
public class CheckpointTests
{
    [Theory]
    [InlineData("dirty_small", 1)]
    [InlineData("kv", 2)]
    [InlineData("idle", 3)]
    [InlineData("compute_small", 4)]
    [InlineData("fp_small", 5)]
    public void HoppingThroughCheckpointsAtRandomStridesEndsInTheSameState(string guest, int seed)
    {
        var expected = GuestRun.Run(guest);
        var rng = new Random(seed);
        var port = GuestRun.PortFor(guest);
        var m = GuestRun.Load(guest, port);
        int hops = 0;
        try
        {
            while (true)
            {
                ulong stride = (ulong)rng.NextInt64(1, (long)(expected.Icount / 6));
                if (m.Run(m.Icount + stride) == StopReason.Exited) break;
                var w = new StateWriter();
                m.SaveState(w);
                port = port.Clone();
                var next = new Machine(new MachineConfig(), port);
                next.RestoreState(new StateReader(w.ToArray()));
                m.Dispose();
                m = next;
                hops++;
            }
            Assert.True(hops >= 3, $"only {hops} hops");
            Assert.Equal(expected.Text, port.OutputText);
            Assert.Equal(expected.Icount, m.Icount);
            Assert.Equal(0, m.ExitCode);
            Assert.Equal(expected.Digest, m.ComputeDigest());
        }
        finally { m.Dispose(); }
    }

    [Fact]
    public void SnapshotSavedOnAnotherThreadWhileTheGuestRunsIsConsistent()
    {
        var port = GuestRun.PortFor("dirty_small");
        using var m = GuestRun.Load("dirty_small", port);
        m.Run(800_000);
        using var snapshot = m.TakeSnapshot();
        var portAtSnapshot = port.Clone();

        var writer = Task.Run(() =>
        {
            var w = new StateWriter();
            snapshot.Save(w);
            return w.ToArray();
        });
        m.Run(); // the guest dirties its working set meanwhile
        Assert.Equal(0, m.ExitCode);
        byte[] saved = writer.Result;

        using var restored = new Machine(new MachineConfig(), portAtSnapshot);
        restored.RestoreState(new StateReader(saved));
        Assert.Equal(snapshot.Digest, restored.ComputeDigest());
        restored.Run();
        Assert.Equal(port.OutputText, portAtSnapshot.OutputText);
        Assert.Equal(m.ComputeDigest(), restored.ComputeDigest());
    }

    [Fact]
    public void DirtyClientSeesExactlyThePagesTheGuestWrote()
    {
        // Restore a run's start into a machine, then compare the pages a dirty client reports
        // with the pages that actually differ at the end.
        var port = GuestRun.PortFor("dirty_small");
        using var m = GuestRun.Load("dirty_small", port);
        m.Run(100_000);
        var client = m.Memory.CreateDirtyClient("test");
        client.CollectAndClear([]);
        var before = new byte[m.Memory.PageCount][];
        for (int p = 0; p < m.Memory.PageCount; p++)
            if (m.Memory.IsTouched(p)) before[p] = m.Memory.PageSpan(p).ToArray();
        m.Run(600_000);
        var dirty = new List<int>();
        client.CollectAndClear(dirty);
        var dirtySet = dirty.ToHashSet();
        for (int p = 0; p < m.Memory.PageCount; p++)
        {
            bool changed = before[p] == null ? !m.Memory.IsZeroPage(p) : !m.Memory.PageSpan(p).SequenceEqual(before[p]);
            if (changed) Assert.True(dirtySet.Contains(p), $"page {p} changed but was not reported dirty");
        }
        Assert.NotEmpty(dirty);
    }
}
