namespace LiveMigration.Migration.Hosting;

/// <summary>Where a fault test cuts a migration connection (source side).</summary>
public enum FaultPoint
{
    /// <summary>After the destination accepted the setup.</summary>
    Setup,
    /// <summary>After the first batch of checkpoint pages.</summary>
    Checkpoint,
    /// <summary>After the first log chunk (log shipping only).</summary>
    Log,
    /// <summary>In the switchover: the source is paused, the final state not yet sent (so no ACK can come).</summary>
    BeforeAck,
    /// <summary>The final state was sent and the source's console closed; no ACK has been read (a cut rolls back and reopens the console).</summary>
    AfterFinalState,
    /// <summary>After the ACK was received (the source has committed), before GO is sent.</summary>
    AfterAck,
    /// <summary>After the ACK was received, before the commit (in a fleet: before the etcd transaction).</summary>
    BeforeCommit,
    /// <summary>Post-copy only: after GO and the first batch of post-copy pages.</summary>
    Postcopy,
}

public sealed record HostOptions
{
    /// <summary>HOST:PORT to listen on; port 0 picks a free one.</summary>
    public string Listen { get; init; } = "127.0.0.1:0";
    /// <summary>Directory for the host's journal of migration outcomes (optional).</summary>
    public string? DataDir { get; init; }
    public ulong MaxMemorySize { get; init; } = 16UL << 30;
    public Action<string>? Log { get; init; }
    /// <summary>How often a destination that lost its source after ACK asks it again for GO.</summary>
    public TimeSpan GoQueryInterval { get; init; } = TimeSpan.FromMilliseconds(200);
    /// <summary>Test hook: returning true at a point cuts the migration connection there.</summary>
    public Func<FaultPoint, bool>? Fault { get; init; }
    /// <summary>Test hook: returning true for a post-copy page damages it on the wire, after its hash was taken.</summary>
    public Func<int, bool>? CorruptPostcopyPage { get; init; }
    /// <summary>Compile hot guest blocks to IL (speed only).</summary>
    public bool CompileBlocks { get; init; } = true;
    /// <summary>Test hook: a destination replays the migration log at most this fast (guest MIPS; 0 = no cap).</summary>
    public double ReplayMipsCap { get; init; }
    /// <summary>Builds the host's ownership (a fleet member on etcd); null: pairwise ACK/GO.</summary>
    public Func<GuestHost, IOwnership>? Ownership { get; init; }
}
