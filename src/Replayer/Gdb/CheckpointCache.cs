using LiveMigration.Guest;
using LiveMigration.Guest.State;

namespace LiveMigration.Replayer.Gdb;

/// <summary>A machine state of the recorded run at <see cref="Icount"/> (between-instruction inputs there already taken).</summary>
public sealed record DebugCheckpoint(ulong Icount, byte[] State);

/// <summary>
/// The in-memory checkpoints a debugging session steps back to. Bounded in count and bytes: when
/// over budget, the checkpoint whose removal leaves the smallest gap relative to its distance from
/// the focus (where the user is) goes, so checkpoints stay dense near the focus and thin out
/// logarithmically away from it. The oldest one (the session's start) is never dropped.
/// </summary>
public sealed class CheckpointCache
{
    private readonly List<DebugCheckpoint> _list = [];

    public CheckpointCache(int maxCount = 96, long maxBytes = 1L << 30)
    {
        MaxCount = Math.Max(2, maxCount);
        MaxBytes = maxBytes;
    }

    public int MaxCount { get; }
    public long MaxBytes { get; }
    public long Bytes { get; private set; }
    public int Count => _list.Count;
    public IReadOnlyList<DebugCheckpoint> All => _list;

    /// <summary>Saves <paramref name="machine"/> (stopped) as a checkpoint; replaces one at the same icount.</summary>
    public DebugCheckpoint Add(Machine machine, ulong focus)
    {
        var w = new StateWriter();
        machine.SaveState(w);
        var c = new DebugCheckpoint(machine.Icount, w.ToArray());
        int i = _list.FindIndex(x => x.Icount >= c.Icount);
        if (i < 0) _list.Add(c);
        else if (_list[i].Icount == c.Icount) { Bytes -= _list[i].State.Length; _list[i] = c; }
        else _list.Insert(i, c);
        Bytes += c.State.Length;
        Thin(focus);
        return c;
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
            Bytes -= _list[victim].State.Length;
            _list.RemoveAt(victim);
        }
    }
}
