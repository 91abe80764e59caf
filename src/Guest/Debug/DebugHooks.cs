using LiveMigration.Guest.Memory;

namespace LiveMigration.Guest.Debug;

public enum WatchKind { Write, Read, Access }

public readonly record struct Watchpoint(ulong Address, ulong Length, WatchKind Kind)
{
    public bool Overlaps(ulong address, int length) => address < Address + Length && Address < address + (ulong)length;
}

/// <summary>Why a debug stop happened: a breakpoint (before its instruction) or a watchpoint (after the access).</summary>
public readonly record struct DebugStop(bool IsWatchpoint, ulong Pc, Watchpoint Watch, ulong AccessAddress);

/// <summary>
/// Breakpoints and watchpoints for a debugger. They cost nothing when none are set. Write watchpoints
/// ride on the memory write barrier (a watched page never takes the fast store path), so compiled
/// code keeps running at speed; read and access watchpoints send every load down the slow path.
/// Breakpoints end compiled blocks, and are checked at each block start and interpreted instruction.
/// </summary>
public sealed class DebugHooks
{
    private readonly GuestMemory _memory;
    private readonly Machine _machine;
    private readonly HashSet<ulong> _breakpoints = [];
    private readonly List<Watchpoint> _watchpoints = [];

    internal DebugHooks(Machine machine)
    {
        _machine = machine;
        _memory = machine.Memory;
        _memory.WatchedWrite = OnWrite;
    }

    /// <summary>Bumped on every change so compiled code built under old breakpoints is dropped.</summary>
    internal int Generation { get; private set; }
    internal bool HasBreakpoints => _breakpoints.Count > 0;
    internal bool WatchesReads { get; private set; }
    internal DebugStop? Pending { get; set; }

    /// <summary>The last stop <see cref="Machine.Run"/> reported with <see cref="StopReason.Debug"/>.</summary>
    public DebugStop? LastStop { get; internal set; }

    public IReadOnlyCollection<ulong> Breakpoints => _breakpoints;
    public IReadOnlyList<Watchpoint> Watchpoints => _watchpoints;

    public bool IsBreakpoint(ulong pc) => _breakpoints.Contains(pc);

    public bool AddBreakpoint(ulong pc) { bool added = _breakpoints.Add(pc); if (added) Generation++; return added; }

    public bool RemoveBreakpoint(ulong pc) { bool removed = _breakpoints.Remove(pc); if (removed) Generation++; return removed; }

    public void AddWatchpoint(Watchpoint w)
    {
        if (w.Length == 0) throw new ArgumentException("a watchpoint covers at least one byte");
        _watchpoints.Add(w);
        Changed();
    }

    public bool RemoveWatchpoint(Watchpoint w)
    {
        bool removed = _watchpoints.Remove(w);
        if (removed) Changed();
        return removed;
    }

    public void ClearAll()
    {
        _breakpoints.Clear();
        _watchpoints.Clear();
        Changed();
    }

    private void Changed()
    {
        Generation++;
        WatchesReads = _watchpoints.Exists(w => w.Kind != WatchKind.Write);
        var pages = new HashSet<int>();
        foreach (var w in _watchpoints)
        {
            if (w.Kind == WatchKind.Read) continue;
            for (ulong a = w.Address & ~(ulong)(GuestMemory.PageSize - 1); a < w.Address + w.Length; a += GuestMemory.PageSize)
                if (_memory.Contains(a, 1)) pages.Add((int)((a - _memory.Base) >> GuestMemory.PageShift));
        }
        _memory.SetWatchedPages(pages);
    }

    /// <summary>The write barrier saw a store to a watched page (before the bytes land).</summary>
    private void OnWrite(ulong offset, int length)
    {
        if (!_machine.IsRunning) return; // restores and loaders write memory too
        ulong address = _memory.Base + offset;
        foreach (var w in _watchpoints)
        {
            if (w.Kind == WatchKind.Read || !w.Overlaps(address, length)) continue;
            Pending ??= new DebugStop(true, _machine.Pc, w, address);
            _machine.InterruptStateChanged(); // finish this instruction, then stop
            return;
        }
    }

    /// <summary>A load on the slow path while read watchpoints are set.</summary>
    internal void OnRead(ulong address, int length)
    {
        foreach (var w in _watchpoints)
        {
            if (w.Kind == WatchKind.Write || !w.Overlaps(address, length)) continue;
            Pending ??= new DebugStop(true, _machine.Pc, w, address);
            _machine.InterruptStateChanged();
            return;
        }
    }
}
