using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Memory;

/// <summary>
/// Pre-copy in miniature: another thread collects dirty pages and copies them while the guest (compiled
/// blocks and all) keeps writing. After a final collection with the guest stopped, the copy must equal
/// RAM byte for byte: no store may slip past a barrier that was being cleared.
/// </summary>
public class DirtyClientConcurrencyTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void RoundsOfCollectAndCopyWhileTheGuestWritesLoseNothing(bool compile)
    {
        using var m = new Machine(new MachineConfig(), NullHostPort.Instance, compile, EagerCompile.Threshold);
        ElfLoader.Load(m, File.ReadAllBytes(Repo.Guest("dirty_forever")));
        var client = m.Memory.CreateDirtyClient("copy");
        var shadow = new byte[m.Memory.PageCount][];
        var pages = new List<int>();

        void Round()
        {
            pages.Clear();
            client.CollectAndClear(pages);
            foreach (int p in pages) shadow[p] = m.Memory.PageSpan(p).ToArray();
        }

        Round(); // everything, before the guest starts
        var guest = new Thread(() => m.Run()) { IsBackground = true };
        guest.Start();
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(1.5);
        int rounds = 0;
        // At least four rounds while the guest runs, however slow a shared machine makes each one.
        while (DateTime.UtcNow < until || rounds < 4) { Round(); rounds++; }
        m.RequestStop();
        Assert.True(guest.Join(TimeSpan.FromSeconds(30)), "the guest did not stop");
        Round(); // the last round, guest stopped: what pre-copy sends after the pause

        int wrong = 0;
        for (int p = 0; p < m.Memory.PageCount; p++)
        {
            var expected = m.Memory.PageSpan(p);
            bool same = shadow[p] == null ? !expected.ContainsAnyExcept((byte)0) : expected.SequenceEqual(shadow[p]);
            if (!same) wrong++;
        }
        Assert.True(rounds > 3, $"only {rounds} rounds ran");
        Assert.Equal(0, wrong);
    }
}
