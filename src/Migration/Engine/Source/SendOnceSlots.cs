namespace LiveMigration.Migration.Engine;

/// <summary>
/// The slots of a post-copy push (manifest pages, or disk blocks), each sent at most once: those
/// asked for are taken as requests come, the background push takes the rest in order.
/// </summary>
internal sealed class SendOnceSlots(bool[] sent)
{
    private int _cursor;

    public int Length => sent.Length;
    public int Remaining { get; private set; } = sent.Count(s => !s);

    /// <summary>Marks <paramref name="slot"/> sent and adds it to <paramref name="into"/>; false when out of range or already sent.</summary>
    public bool Take(int slot, List<int> into)
    {
        if (slot < 0 || slot >= sent.Length || sent[slot]) return false;
        sent[slot] = true;
        Remaining--;
        into.Add(slot);
        return true;
    }

    /// <summary>The next unsent slots in order, until <paramref name="into"/> holds <paramref name="max"/>.</summary>
    public void TakeNext(int max, List<int> into)
    {
        while (into.Count < max && _cursor < sent.Length) Take(_cursor++, into);
    }
}
