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
    /// <summary>On the return-path reader, an ACK in hand and not yet acted on: a cut here loses that ACK.</summary>
    AckArrived,
}

/// <summary>Where a fault test stops a destination dead (a crash: the hook takes the host down and returns true).</summary>
public enum DestinationFaultPoint
{
    /// <summary>GO received, the guest not yet resumed, Resumed not sent.</summary>
    BeforeResume = 1,
    /// <summary>Post-copy: every page verified, PostcopyDone not yet sent (a hook that sleeps here is a transient stall).</summary>
    BeforePostcopyDone = 2,
    /// <summary>Fleet: GO in hand and the committed record seen (the guest is this host's now), the guest not yet resumed.</summary>
    RecordSeen = 3,
}

public sealed record HostOptions
{
    /// <summary>HOST:PORT to listen on; port 0 picks a free one.</summary>
    public string Listen { get; init; } = "127.0.0.1:0";
    /// <summary>Directory for the host's journal of migration outcomes (optional).</summary>
    public string? DataDir { get; init; }
    /// <summary>
    /// Where incoming guests' disk images are kept (`lm host --disk-dir`); a migration naming a disk
    /// path or base outside it is refused. Null: the data directory; neither: no disk is accepted.
    /// </summary>
    public string? DiskDir { get; init; }
    /// <summary>Largest single guest.</summary>
    public ulong MaxMemorySize { get; init; } = 16UL << 30;
    /// <summary>Mutual TLS for every connection (control, migration, console); null: plaintext, loopback only.</summary>
    public Transport.Tls.TlsIdentity? Tls { get; init; }

    // ---- Limits (`lm host --max-...`) ----
    /// <summary>Connections served at once (control, migration); more are closed at accept.</summary>
    public int MaxConnections { get; init; } = 64;
    /// <summary>TLS handshake plus Hello must complete within this.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Once a frame's header arrived, its payload must arrive within this.</summary>
    public TimeSpan ReadTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>A control connection with no request for this long is closed.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>Guests running or arriving here at once.</summary>
    public int MaxGuests { get; init; } = 32;
    /// <summary>The RAM of all guests (running and arriving) stays below this fraction of the host's memory.</summary>
    public double MaxMemoryFraction { get; init; } = 0.75;
    /// <summary>The host memory the fraction applies to (0: what the runtime reports, the machine or its cgroup limit).</summary>
    public ulong HostMemory { get; init; }
    /// <summary>Incoming migrations at once.</summary>
    public int MaxIncomingMigrations { get; init; } = 4;

    /// <summary>Total guest RAM this host admits.</summary>
    public ulong GuestMemoryBudget => (ulong)(MaxMemoryFraction * (HostMemory != 0 ? HostMemory : (ulong)GC.GetGCMemoryInfo().TotalAvailableMemoryBytes));
    public Action<string>? Log { get; init; }
    /// <summary>How often a destination that lost its source after ACK asks it again for GO.</summary>
    public TimeSpan GoQueryInterval { get; init; } = TimeSpan.FromMilliseconds(200);
    /// <summary>
    /// The switchover's commit step for migrations out of this host (a fleet's ownership transaction);
    /// null: ACK/GO between the two hosts (<see cref="Engine.PairwiseCommit"/>).
    /// </summary>
    public Func<GuestHost, Engine.ISwitchoverCommit>? SwitchoverCommit { get; init; }
    /// <summary>Test hook: returning true at a point cuts the migration connection there.</summary>
    public Func<FaultPoint, bool>? Fault { get; init; }
    /// <summary>Test hook: returning true for a post-copy page damages it on the wire, after its hash was taken.</summary>
    public Func<int, bool>? CorruptPostcopyPage { get; init; }
    /// <summary>Test hook: returning true for a post-copy disk block damages it on the wire, after its hash was taken.</summary>
    public Func<long, bool>? CorruptPostcopyBlock { get; init; }
    /// <summary>Pre-copy sends the disk's dirty blocks after every round (false: only the first pass and the pause, for comparison in DiskBench).</summary>
    public bool PrecopyDiskEveryRound { get; init; } = true;
    /// <summary>Compile hot guest blocks to IL (speed only).</summary>
    public bool CompileBlocks { get; init; } = true;
    /// <summary>Test hook: a destination replays the migration log at most this fast (guest MIPS; 0 = no cap).</summary>
    public double ReplayMipsCap { get; init; }
    /// <summary>Source: how long the switchover waits, the guest running, for a commit store that cannot say whether a commit would succeed (then it fails, the guest still running).</summary>
    public TimeSpan PauseCheckBudget { get; init; } = TimeSpan.FromSeconds(20);
    /// <summary>Source: how long to wait for the destination's ACK once the final state went.</summary>
    public TimeSpan AckTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Source: how long `lm migrate` waits after GO for the destination's word that the guest runs there (then the paused copy is held).</summary>
    public TimeSpan ResumeConfirmTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Source, post-copy: how long to wait for PostcopyDone after the last page went.</summary>
    public TimeSpan PostcopyDoneTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Source: a destination silent this long (no heartbeat, no progress) is stalled; before commit that rolls back.</summary>
    public TimeSpan PeerSilenceLimit { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Destination: how often it sends its Heartbeat while a migration is in flight.</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromMilliseconds(10);
    /// <summary>Test hook: while it returns true a destination's migration threads stand still (SIGSTOP in-process).</summary>
    public Func<bool>? Stalled { get; init; }
    /// <summary>Test hook: a source sends this instead of its machine's identity (a peer of another build).</summary>
    public Func<Protocol.MachineIdentity, Protocol.MachineIdentity>? SentIdentity { get; init; }
    /// <summary>Test hook: returning true stops the destination dead at that point (the test takes the host down).</summary>
    public Func<DestinationFaultPoint, bool>? DestinationFault { get; init; }
    /// <summary>Builds the host's ownership (a fleet member on etcd); null: pairwise ACK/GO.</summary>
    public Func<GuestHost, IOwnership>? Ownership { get; init; }
}
