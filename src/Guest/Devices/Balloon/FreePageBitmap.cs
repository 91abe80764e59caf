using System.Numerics;

namespace LiveMigration.Guest.Devices.Balloon;

/// <summary>One bit per DRAM page: set while the guest has reported the page free.</summary>
public sealed class FreePageBitmap
{
    private readonly ulong[] _words;

    public FreePageBitmap(int pageCount)
    {
        PageCount = pageCount;
        _words = new ulong[(pageCount + 63) / 64];
    }

    public int PageCount { get; }

    /// <summary>Pages currently marked free.</summary>
    public int Count { get; private set; }

    public bool this[int page] => (uint)page < (uint)PageCount && (_words[page >> 6] & (1UL << page)) != 0;

    /// <summary>Sets or clears <paramref name="count"/> bits from <paramref name="first"/>; returns how many changed.</summary>
    public int SetRange(int first, int count, bool free)
    {
        int changed = 0;
        for (int page = first; page < first + count; page++)
        {
            ref ulong w = ref _words[page >> 6];
            ulong bit = 1UL << page;
            if (((w & bit) != 0) == free) continue;
            w ^= bit;
            changed++;
        }
        Count += free ? changed : -changed;
        return changed;
    }

    public void Clear()
    {
        Array.Clear(_words);
        Count = 0;
    }

    /// <summary>First free page at or after <paramref name="from"/>, or -1.</summary>
    public int NextFree(int from)
    {
        if (from < 0) from = 0;
        for (int wi = from >> 6; wi < _words.Length; wi++)
        {
            ulong w = _words[wi];
            if (wi == from >> 6) w &= ~0UL << (from & 63);
            if (w != 0)
            {
                int page = (wi << 6) + BitOperations.TrailingZeroCount(w);
                return page < PageCount ? page : -1;
            }
        }
        return -1;
    }

    /// <summary>First page at or after <paramref name="from"/> that is not free (PageCount if none).</summary>
    public int NextUsed(int from)
    {
        for (int wi = Math.Max(from, 0) >> 6; wi < _words.Length; wi++)
        {
            ulong w = ~_words[wi];
            if (wi == from >> 6) w &= ~0UL << (from & 63);
            if (w != 0) return Math.Min((wi << 6) + BitOperations.TrailingZeroCount(w), PageCount);
        }
        return PageCount;
    }

    /// <summary>Maximal runs of free pages, in ascending order.</summary>
    public IEnumerable<(int First, int Count)> Ranges()
    {
        int page = NextFree(0);
        while (page >= 0)
        {
            int end = NextUsed(page);
            yield return (page, end - page);
            page = end < PageCount ? NextFree(end) : -1;
        }
    }
}
