using System.Runtime.InteropServices;
using LiveMigration.Guest;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.State;

namespace LiveMigration.Replayer.Gdb;

/// <summary>
/// A machine state of the recorded run at <see cref="Icount"/> (between-instruction inputs there
/// already taken): CPU and device sections plus a page table whose pages (null = zero) are
/// immutable and shared with the neighbouring checkpoints.
/// </summary>
public sealed class DebugCheckpoint
{
    internal DebugCheckpoint(ulong icount, byte[] deviceState, byte[]?[] pages, int newPages)
    {
        Icount = icount;
        DeviceState = deviceState;
        Pages = pages;
        NewPages = newPages;
    }

    public ulong Icount { get; }
    internal byte[] DeviceState { get; }
    internal byte[]?[] Pages { get; }
    /// <summary>Pages this checkpoint copied (the others it shares with the one before it).</summary>
    public int NewPages { get; }
}

/// <summary>
/// The in-memory checkpoints a debugging session steps back to, and the machine's restore to one.
/// Incremental both ways, through the machine's dirty map: taking a checkpoint copies only the
/// pages written since the last take or restore; restoring rewrites only the pages that differ
/// from what the machine holds. Bounded in count and bytes: when over budget, the checkpoint whose
/// removal leaves the smallest gap relative to its distance from the focus (where the user is)
/// goes, so checkpoints stay dense near the focus and thin out away from it. The oldest one (the
/// session's start) is never dropped.
/// </summary>
public sealed class CheckpointCache : IDisposable
{
    private readonly List<DebugCheckpoint> _list = [];
    private readonly Dictionary<byte[], int> _pageRefs = new(ReferenceEqualityComparer.Instance);
    private readonly List<int> _dirty = [];
    private Machine? _machine;
    private DirtyClient? _client;
    /// <summary>What the machine's RAM held at the last take or restore (plus the pages dirty since).</summary>
    private byte[]?[] _base = [];

    public CheckpointCache(int maxCount = 96, long maxBytes = 1L << 30)
    {
        MaxCount = Math.Max(2, maxCount);
        MaxBytes = maxBytes;
    }

    public int MaxCount { get; }
    public long MaxBytes { get; }
    /// <summary>Bytes of distinct pages held (shared pages counted once).</summary>
    public long Bytes { get; private set; }
    public int Count => _list.Count;
    public IReadOnlyList<DebugCheckpoint> All => _list;

    private void Attach(Machine machine)
    {
        if (_machine == machine) return;
        if (_machine != null) throw new InvalidOperationException("a checkpoint cache serves one machine");
        _machine = machine;
        _client = machine.Memory.CreateDirtyClient("gdb checkpoints"); // starts all dirty: the first take copies everything
        _base = new byte[]?[machine.Memory.PageCount];
    }

    /// <summary>Saves <paramref name="machine"/> (stopped) as a checkpoint; replaces one at the same icount.</summary>
    public DebugCheckpoint Add(Machine machine, ulong focus)
    {
        Attach(machine);
        var memory = machine.Memory;
        var pages = (byte[]?[])_base.Clone();
        _dirty.Clear();
        _client!.CollectAndClear(_dirty);
        int copied = 0;
        foreach (int i in _dirty)
        {
            if (memory.IsZeroPage(i)) { pages[i] = null; continue; }
            var copy = GC.AllocateUninitializedArray<byte>(GuestMemory.PageSize);
            memory.PageSpan(i).CopyTo(copy);
            pages[i] = copy;
            copied++;
        }
        _base = pages;
        var c = new DebugCheckpoint(machine.Icount, machine.SaveDeviceState(), pages, copied);
        int at = _list.FindIndex(x => x.Icount >= c.Icount);
        if (at < 0) _list.Add(c);
        else if (_list[at].Icount == c.Icount) { Release(_list[at]); _list[at] = c; }
        else _list.Insert(at, c);
        Retain(c);
        Thin(focus);
        return c;
    }

    /// <summary>Puts <paramref name="machine"/> back in the state of <paramref name="c"/>.</summary>
    public void Restore(Machine machine, DebugCheckpoint c)
    {
        Attach(machine);
        var memory = machine.Memory;
        _dirty.Clear();
        _client!.CollectAndClear(_dirty);
        foreach (int i in _dirty) Put(memory, i, c.Pages[i]);
        var target = c.Pages;
        for (int i = 0; i < target.Length; i++)
            if (!ReferenceEquals(target[i], _base[i]) && !_client.IsDirty(i)) Put(memory, i, target[i]);
        _dirty.Clear();
        _client.CollectAndClear(_dirty); // our own writes
        _base = target;
        machine.Reset(machine.Pc); // clears the exit status; CPU and devices come next
        machine.RestoreDeviceState(new StateReader(c.DeviceState));
    }

    private static void Put(GuestMemory memory, int page, byte[]? content)
    {
        if (content == null) memory.ZeroPage(page);
        else memory.WritePage(page, content);
    }

    /// <summary>The latest checkpoint at or before <paramref name="icount"/>, or null.</summary>
    public DebugCheckpoint? AtOrBefore(ulong icount)
    {
        DebugCheckpoint? best = null;
        foreach (var c in _list)
        {
            if (c.Icount > icount) break;
            best = c;
        }
        return best;
    }

    /// <summary>Distance from <paramref name="icount"/> to the nearest checkpoint.</summary>
    public ulong DistanceToNearest(ulong icount)
    {
        ulong best = ulong.MaxValue;
        foreach (var c in _list) best = Math.Min(best, c.Icount > icount ? c.Icount - icount : icount - c.Icount);
        return best;
    }

    private void Retain(DebugCheckpoint c)
    {
        foreach (var p in c.Pages)
        {
            if (p == null) continue;
            ref int n = ref CollectionsMarshal.GetValueRefOrAddDefault(_pageRefs, p, out bool existed);
            if (!existed) Bytes += GuestMemory.PageSize;
            n++;
        }
    }

    private void Release(DebugCheckpoint c)
    {
        foreach (var p in c.Pages)
        {
            if (p == null) continue;
            if (--_pageRefs[p] == 0) { _pageRefs.Remove(p); Bytes -= GuestMemory.PageSize; }
        }
    }

    private void Thin(ulong focus)
    {
        while (_list.Count > 2 && (_list.Count > MaxCount || Bytes > MaxBytes))
        {
            int victim = -1;
            double bestScore = double.MaxValue;
            for (int i = 1; i < _list.Count - 1; i++)
            {
                double gap = _list[i + 1].Icount - _list[i - 1].Icount;
                ulong at = _list[i].Icount;
                double distance = at > focus ? at - focus : focus - at;
                double score = gap / (distance + 1);
                if (score < bestScore) { bestScore = score; victim = i; }
            }
            if (victim < 0) return;
            Release(_list[victim]);
            _list.RemoveAt(victim);
        }
    }

    public void Dispose()
    {
        _client?.Release();
        _client = null;
    }
}
