using LiveMigration.Guest;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>What the destination's strategies and its switchover share: the host, the connection, the machine being built, its state.</summary>
internal sealed class DestinationContext(GuestHost host, Connection conn, MigrationDestination owner)
{
    private volatile DestinationState _state = DestinationState.Arriving;

    public GuestHost Host { get; } = host;
    /// <summary>Replaced when a post-copy resume arrives on a new connection.</summary>
    public Connection Conn { get; set; } = conn;
    public MigrationDestination Owner { get; } = owner;
    /// <summary>Taken by whatever settles or discards the incoming copy, and around page writes (a discard frees the RAM).</summary>
    public object Lock { get; } = new();
    public MigrateSetup Setup { get; set; } = new();
    public GuestEntry? Entry { get; set; }
    public Machine? Machine { get; set; }
    /// <summary>The guest's disk as it arrives (null when the guest has none).</summary>
    public DiskArrival? Disk { get; set; }
    /// <summary>The final state the ACK verified (what GO resumes from).</summary>
    public FinalState? Final { get; set; }
    /// <summary>True once the copy runs here or was discarded (under <see cref="Lock"/>).</summary>
    public bool Resolved { get; set; }
    /// <summary>Fleet: the epoch of the record that named the source at set-up (what the commit moves).</summary>
    public long Epoch { get; set; }
    /// <summary>Fleet, from the final state's verification on: completes when the guest's record shows the commit (true) or another owner (false).</summary>
    public Task<bool>? Record { get; set; }
    /// <summary>Stops the <see cref="Record"/> watch when the copy is discarded.</summary>
    public CancellationTokenSource? RecordWatch { get; set; }

    public DestinationState State { get => _state; set => _state = value; }
    public string Name => Setup.Name;

    /// <summary>Tells the source why this side gives up (it may be gone already).</summary>
    public void SendAbort(string why)
    {
        try { Conn.Send(new Envelope { Abort = new Abort { Reason = why } }); } catch (IOException) { }
    }

    /// <summary>Test hook (<see cref="HostOptions.Stalled"/>): the migration's threads stand still, as under SIGSTOP.</summary>
    public void WhileStalled()
    {
        while (Host.Options.Stalled?.Invoke() == true) Thread.Sleep(5);
    }
}

/// <summary>
/// One strategy's receiving side: what it does with the final state. The destination's messages
/// pick the chain (log replay, then pre-copy on a fallback, then post-copy on a manifest);
/// <see cref="DestinationSwitchover"/> runs the same verification, ACK and GO for all of them.
/// </summary>
internal interface IArrivalStrategy
{
    /// <summary>Brings the machine to the final state; null when it is there (with the digest the ACK carries), else why not.</summary>
    string? ReachFinal(FinalState final, out ulong digest);

    /// <summary>The ACK went: let go of what no later message can need.</summary>
    void AfterAck(FinalState final, ulong digest);

    /// <summary>GO: the guest is about to run here (under the destination's lock).</summary>
    void BeforeResume();

    /// <summary>True when pages still come after GO (post-copy).</summary>
    bool ServesAfterGo { get; }

    /// <summary>The incoming copy is discarded: stop whatever runs (the replay).</summary>
    void Stop();
}

/// <summary>The final state applied as sent (stop-and-copy, pre-copy): every page is here, the device state is the source's.</summary>
internal sealed class ImageArrival(DestinationContext ctx) : IArrivalStrategy
{
    public string? ReachFinal(FinalState final, out ulong digest) => FullDigest.RestoreAndCheck(ctx.Machine!, final, out digest);
    public void AfterAck(FinalState final, ulong digest) => FullDigest.LogVerified(ctx, final, digest);
    public void BeforeResume() { }
    public bool ServesAfterGo => false;
    public void Stop() { }
}

internal static class FullDigest
{
    /// <summary>Applies the final device state as sent, then checks the whole machine's digest.</summary>
    public static string? RestoreAndCheck(Machine machine, FinalState final, out ulong digest)
    {
        machine.RestoreDeviceState(new Guest.State.StateReader(final.DeviceState.Memory));
        return Mismatch(machine, final, out digest);
    }

    public static void LogVerified(DestinationContext ctx, FinalState final, ulong digest) =>
        ctx.Host.Log($"'{ctx.Name}' verified at icount {final.Icount} digest {digest:x16}; ACK sent, awaiting GO");

    /// <summary>Null when the machine is at the final state's icount with its digest; else the one-line mismatch.</summary>
    public static string? Mismatch(Machine machine, FinalState final, out ulong digest)
    {
        digest = machine.ComputeDigest();
        return machine.Icount == final.Icount && digest == final.Digest ? null
            : $"digest mismatch at icount {final.Icount}: destination has {digest:x16} at {machine.Icount}, source sent {final.Digest:x16}";
    }
}
