using LiveMigration.Guest.Memory;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Memory;

/// <summary>Native memory is freed exactly once, however often and from however many threads Dispose is called.</summary>
public class DisposeTests
{
    [Fact]
    public void Machine_dispose_twice_frees_once()
    {
        var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
        m.Memory.Write(m.Memory.Base, [1, 2, 3]);
        Assert.False(m.IsDisposed);
        m.Dispose();
        Assert.True(m.IsDisposed);
        Assert.True(m.Memory.IsDisposed);
        m.Dispose(); // a double free would abort the process here
        m.Memory.Dispose();
        Assert.True(m.IsDisposed);
    }

    [Fact]
    public void Memory_disposed_by_its_owner_and_again_directly()
    {
        var mem = new GuestMemory(64 * 1024);
        mem.Write(mem.Base + 4096, [9]);
        mem.Dispose();
        mem.Dispose();
        Assert.True(mem.IsDisposed);
    }

    [Fact]
    public void Concurrent_disposes_free_once()
    {
        for (int round = 0; round < 20; round++)
        {
            var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
            using var start = new Barrier(4);
            var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() => { start.SignalAndWait(); m.Dispose(); })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            Assert.True(m.IsDisposed);
        }
    }
}
