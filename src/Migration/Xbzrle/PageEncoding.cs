namespace LiveMigration.Migration.Xbzrle;

/// <summary>How one page travels in a pre-copy round (<c>DeltaPages.kinds</c>). Wire values: never reuse a number.</summary>
public enum PageEncoding : byte
{
    /// <summary>The guest reported the page free: nothing is sent; the receiver zeroes it.</summary>
    Free = 0,
    /// <summary>All zeros: a marker only.</summary>
    Zero = 1,
    /// <summary>Identical to the copy the receiver holds in its cache: nothing is sent.</summary>
    Unchanged = 2,
    /// <summary>An XBZRLE delta against the receiver's cached copy.</summary>
    Delta = 3,
    /// <summary>The whole page (first send, cache miss, or the delta would not pay).</summary>
    Full = 4,
    /// <summary>An XBZRLE delta against the receiver's current copy of the page in guest memory
    /// (after an auto fallback: its copy at checkpoint C0, which the sender retained).</summary>
    DeltaBase = 5,
}
