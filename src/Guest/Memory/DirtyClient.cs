namespace LiveMigration.Guest.Memory;

/// <summary>
/// One reader of the dirty byte-map (pre-copy, checkpointing, digest, debugger). Each client owns
/// one bit per page: set by any guest write, cleared only by this client.
/// </summary>
public sealed class DirtyClient
{
    private readonly GuestMemory _memory;
    internal readonly byte Bit;

    internal DirtyClient(GuestMemory memory, byte bit, string name)
    {
        _memory = memory;
        Bit = bit;
        Name = name;
    }

    public string Name { get; }

    public bool IsDirty(int page) => (_memory.DirtyMap[page] & Bit) != 0;

    /// <summary>Clears one page's bit. From another thread while the guest runs, call
    /// <see cref="GuestMemory.AwaitStoresInFlight"/> before reading the page.</summary>
    public void Clear(int page) => _memory.ClearDirty(page, Bit);

    /// <summary>Marks every page dirty for this client only (e.g. "send everything" at the start of pre-copy).</summary>
    public void MarkAll()
    {
        var map = _memory.DirtyMap;
        for (int i = 0; i < map.Length; i++) map[i] |= Bit;
    }

    /// <summary>Appends the dirty pages to <paramref name="pages"/> and clears them; returns how many.</summary>
    /// <remarks>
    /// Safe from any thread while the guest runs: before returning it waits until every store that may
    /// have slipped past a cleared barrier has landed (see <see cref="GuestMemory.AwaitStoresInFlight"/>),
    /// so reading the collected pages afterwards misses nothing, and later stores mark them again.
    /// </remarks>
    public int CollectAndClear(List<int> pages)
    {
        var map = _memory.DirtyMap;
        int n = 0;
        for (int i = 0; i < map.Length; i++)
        {
            if ((map[i] & Bit) == 0) continue;
            pages.Add(i);
            _memory.ClearDirty(i, Bit);
            n++;
        }
        if (n > 0) _memory.AwaitStoresInFlight();
        return n;
    }

    public int CountDirty()
    {
        var map = _memory.DirtyMap;
        int n = 0;
        for (int i = 0; i < map.Length; i++) if ((map[i] & Bit) != 0) n++;
        return n;
    }

    public void Release() => _memory.ReleaseClient(this);
}
