using LiveMigration.Guest;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The receiving half of one migration: accepts the set-up, builds the machine from what arrives
/// and hands each message to the strategy it belongs to (<see cref="IArrivalStrategy"/>: image,
/// log replay, pre-copy, post-copy; auto's chain follows the source's fallback and manifest
/// messages). The final state, ACK and GO are the one <see cref="DestinationSwitchover"/>.
/// </summary>
internal sealed class MigrationDestination
{
    private readonly DestinationContext _ctx;
    private readonly DestinationSwitchover _switchover;
    private LogReplayArrival? _log;
    private PostcopyArrival? _postcopy;
    private volatile IArrivalStrategy? _current;
    private DiskBase? _diskBase;

    public MigrationDestination(GuestHost host, Connection conn)
    {
        _ctx = new DestinationContext(host, conn, this);
        _switchover = new DestinationSwitchover(_ctx, () => _log?.Stop());
    }

    public DestinationState State => _ctx.State;
    public ulong MemorySize => _ctx.Setup.MemorySize;
    /// <summary>True once the ACK went: only the source (or an operator) can settle it now.</summary>
    public bool AwaitingGo => State == DestinationState.AwaitingGo;
    internal GuestInstance? Instance => _switchover.Instance;
    private IArrivalStrategy Current => _current ?? throw new ProtocolException("no strategy set up");

    /// <summary>Serves the stream that began with <paramref name="first"/> (its set-up, or a post-copy resume).</summary>
    public void Run(Envelope first)
    {
        var conn = _ctx.Conn;
        try
        {
            if (first.BodyCase == Envelope.BodyOneofCase.PostcopyResume)
            {
                conn.ReceiveTimeout = TimeSpan.FromSeconds(60);
                try { AcceptPostcopyResume(_ctx.Host, conn, first.PostcopyResume); }
                catch (Exception e) when (e is IOException or ObjectDisposedException) { _ctx.Host.Log($"post-copy resume connection lost: {e.Message}"); }
                return;
            }
            if (first.BodyCase != Envelope.BodyOneofCase.Setup) throw new ProtocolException($"expected MigrateSetup, got {first.BodyCase}");
            conn.ReceiveTimeout = TimeSpan.FromSeconds(60);
            if (!Accept(first.Setup, out string? why))
            {
                conn.Send(new Envelope { SetupReply = new SetupReply { Accepted = false, Error = why } });
                _ctx.Host.Log($"refused migration of '{first.Setup.Name}' from {first.Setup.Source}: {why}");
                return;
            }
            conn.Send(new Envelope { SetupReply = new SetupReply { Accepted = true, DiskBase = _diskBase } });
            new Thread(Heartbeats) { IsBackground = true, Name = $"heartbeat-{_ctx.Name}" }.Start();
            Receive();
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ProtocolException or MigrationFailedException)
        {
            // This side refuses what arrived (a disk that does not verify, say): the source hears why, not just a closed connection.
            if (e is MigrationFailedException or InvalidDataException && _ctx.State != DestinationState.AwaitingGo) _ctx.SendAbort(e.Message);
            _switchover.ConnectionLost(e.Message, () => Current);
        }
        catch (Exception e)
        {
            // Whatever a hostile or broken stream trips on, the incoming copy goes entirely (name, machine, console).
            _switchover.ConnectionLost($"{e.GetType().Name}: {e.Message}", () => Current);
        }
    }

    private static long? RecordEpoch(GuestHost host, MigrateSetup setup, out string? unanswered)
    {
        unanswered = null;
        try { return host.Ownership.EpochIfOwner(setup.Name, setup.Source); }
        catch (OwnershipUnsettledException e) { unanswered = e.Message; return null; }
    }

    private bool Accept(MigrateSetup setup, out string? why)
    {
        var host = _ctx.Host;
        _ctx.Setup = setup;
        why = null;
        if (setup.MemorySize == 0 || setup.MemorySize % 4096 != 0 || setup.MemorySize > host.Options.MaxMemorySize)
            why = $"machine config not supported: {setup.MemorySize >> 20} MiB of RAM (this host allows up to {host.Options.MaxMemorySize >> 20} MiB)";
        else if (setup.PageCount != setup.MemorySize / 4096)
            why = $"machine config mismatch: {setup.PageCount} pages for {setup.MemorySize} bytes";
        else if (!Strategies.IsKnown(setup.Strategy))
            why = $"unknown strategy {(int)setup.Strategy} (a peer of a newer build)";
        // FLEET: a draining host takes no guests; the record must name the source (its epoch is what the commit moves).
        else if (host.Ownership.RefuseNewGuests() is { } refused) why = refused;
        // The source named here is whom GO is asked of and whose fleet record is moved: it must be the peer.
        else if (host.SourceClaimProblem(_ctx.Conn.Peer, setup.Source) is { } impostor) why = impostor;
        else if (RecordEpoch(host, setup, out var unanswered) is long epoch) _ctx.Epoch = epoch;
        else why = unanswered ?? $"the fleet record of '{setup.Name}' does not name {setup.Source}";
        if (why != null) return false;
        GuestEntry entry;
        lock (host.Lock)
        {
            var existing = host.Entry(setup.Name);
            if (existing?.Busy() is { } busy)
            {
                why = $"a guest named '{setup.Name}' already {busy} on this host";
                return false;
            }
            if (host.AdmitIncoming(setup, _ctx.Conn.Peer) is { } full)
            {
                why = full;
                return false;
            }
            entry = _ctx.Entry = new GuestEntry(setup.Name) { Arriving = this, ArrivedBy = setup.MigrationId };
            host.SetEntry(entry);
        }
        var machine = new Machine(MachineIdentities.Config(setup), NullHostPort.Instance, host.Options.CompileBlocks);
        why = MachineIdentities.Mismatch(MachineIdentities.Of(machine), setup.Machine);
        if (why == null)
        {
            try { _ctx.Disk = DiskArrival.Prepare(_ctx, setup, out _diskBase); }
            catch (Exception e) when (e is MigrationFailedException or IOException or InvalidDataException or UnauthorizedAccessException) { why = e.Message; }
        }
        if (why != null)
        {
            machine.Dispose();
            lock (host.Lock) host.RemoveEntry(entry);
            return false;
        }
        _ctx.Machine = machine;
        // Where the chain starts; auto's later steps follow the source's messages.
        _current = setup.Strategy switch
        {
            Strategy.Stopcopy => new ImageArrival(_ctx),
            Strategy.Precopy => new PrecopyArrival(_ctx),
            Strategy.Postcopy => new ImageArrival(_ctx), // until its manifest arrives
            _ => _log = new LogReplayArrival(_ctx, keepC0: setup.Strategy == Strategy.Auto),
        };
        _switchover.PrepareResume();
        host.Log($"receiving '{setup.Name}' from {setup.Source} ({Strategies.Name(setup.Strategy)}, migration {setup.MigrationId})");
        return true;
    }

    private void Receive()
    {
        while (true)
        {
            _ctx.WhileStalled();
            var e = _ctx.Conn.Receive();
            switch (e.BodyCase)
            {
                // Under the lock a discard takes: a host shutting down must not free the RAM a batch is being written into.
                case Envelope.BodyOneofCase.Pages: lock (_ctx.Lock) { if (_ctx.Resolved) return; PageReceiver.Apply(_ctx.Machine!.Memory, e.Pages); } break;
                case Envelope.BodyOneofCase.ZeroPages: lock (_ctx.Lock) { if (_ctx.Resolved) return; PageReceiver.Apply(_ctx.Machine!.Memory, e.ZeroPages); } break;
                case Envelope.BodyOneofCase.DiskBlocks:
                    lock (_ctx.Lock)
                    {
                        if (_ctx.Resolved) return;
                        if (_ctx.State == DestinationState.Replaying) throw new ProtocolException("disk blocks during log replay (replay writes the disk)");
                        (_ctx.Disk ?? throw new ProtocolException("disk blocks for a guest without a disk")).OnBlocks(e.DiskBlocks);
                    }
                    break;
                case Envelope.BodyOneofCase.DiskDone:
                    lock (_ctx.Lock)
                    {
                        if (_ctx.Resolved) return;
                        (_ctx.Disk ?? throw new ProtocolException("DiskDone for a guest without a disk")).OnDone(e.DiskDone);
                    }
                    break;
                case Envelope.BodyOneofCase.CheckpointDone: Log().OnCheckpointDone(e.CheckpointDone); break;
                case Envelope.BodyOneofCase.Log: Log().OnLog(e.Log); break;
                case Envelope.BodyOneofCase.DeltaPages:
                    lock (_ctx.Lock)
                    {
                        if (_ctx.Resolved) return;
                        if (_current is not PrecopyArrival precopy) throw new ProtocolException("pre-copy pages outside pre-copy");
                        precopy.OnDeltaPages(e.DeltaPages);
                    }
                    break;
                case Envelope.BodyOneofCase.PrecopyFallback: FallBack(e.PrecopyFallback); break;
                case Envelope.BodyOneofCase.PostcopyManifest: _current = _postcopy = new PostcopyArrival(_ctx, e.PostcopyManifest); break; // post-copy, or auto's last resort after pre-copy
                case Envelope.BodyOneofCase.FinalState:
                    if (!_switchover.Verify(e.FinalState, Current)) return;
                    break;
                case Envelope.BodyOneofCase.Go:
                    if (_ctx.Host.Options.DestinationFault?.Invoke(DestinationFaultPoint.BeforeResume) == true) return; // crashed here (the test took the host down)
                    _switchover.Start(e.Go.ConsoleInput.ToByteArray(), e.Go.ConsoleBacklog.ToByteArray(), "GO", Current);
                    _postcopy?.ReceivePages();
                    return;
                case Envelope.BodyOneofCase.Abort:
                    Discard($"the source aborted: {e.Abort.Reason}");
                    return;
                default:
                    throw new ProtocolException($"unexpected {e.BodyCase} during a migration");
            }
        }
    }

    private LogReplayArrival Log() => _log ?? throw new ProtocolException("log shipping messages in a migration without log shipping");

    /// <summary>Auto's source gave up on log shipping: back to C0, pre-copy from there.</summary>
    private void FallBack(PrecopyFallback fallback)
    {
        if (_ctx.Setup.Strategy != Strategy.Auto || _log == null) throw new ProtocolException("fallback to pre-copy without a retained checkpoint C0");
        int pages = _log.ReturnToC0(fallback);
        _current = new PrecopyArrival(_ctx);
        _ctx.State = DestinationState.Precopy;
        _ctx.Host.Log($"'{_ctx.Name}': source fell back to pre-copy ({fallback.Reason}); replay dropped, {pages} pages back to C0 (digest verified)");
    }

    /// <summary>`lm resolve`: pending asks the source now; go / abort is the operator's decision.</summary>
    public string Resolve(Decision decision) => _switchover.Resolve(decision, Current);

    public void Discard(string why) => _switchover.Discard(why);

    /// <summary>
    /// Proof of life for the source, with the bytes taken off the connection so far, until the guest
    /// runs here or is discarded. A stalled host (SIGSTOP) stops beating, and the source sees it.
    /// </summary>
    private void Heartbeats()
    {
        var conn = _ctx.Conn;
        var interval = _ctx.Host.Options.HeartbeatInterval;
        while (!_ctx.Host.ShuttingDown.IsCancellationRequested)
        {
            Thread.Sleep(interval);
            _ctx.WhileStalled();
            lock (_ctx.Lock) if (_ctx.Resolved) return;
            try { conn.Send(new Envelope { Heartbeat = new Heartbeat { ReceivedBytes = (ulong)conn.ReceivedTotal } }); }
            catch (IOException) { return; }
        }
    }

    // ---- Post-copy, for the host's status and its operator exits ----

    /// <summary>Why post-copy stopped before every page arrived (null while fine or when complete).</summary>
    public string? PostcopyFailure => _postcopy?.Failure;
    public long PostcopyVerifiedPages => _postcopy?.VerifiedPages ?? 0;
    public long PostcopyRequestedPages => _postcopy?.RequestedPages ?? 0;
    public int PostcopyAbsentPages => _ctx.Machine?.Memory.AbsentPageCount ?? 0;
    /// <summary>For status: the post-copy phase and how many pages are still missing.</summary>
    public string PostcopyStatus => $"{DestinationStates.Name(State)}, {PostcopyAbsentPages} pages absent" + (_ctx.Disk is { AwaitedBlocks: > 0 and var b } ? $", {b} disk blocks to come" : "");

    /// <summary>`lm stop` of a post-copy guest whose pages may never come: cut the link; the guest thread stops waiting.</summary>
    public void AbandonPostcopy(string why) => _postcopy?.Abandon(why);

    /// <summary>
    /// A recovery connection (`lm migrate --resume` on the source) for the post-copy of the guest it
    /// names: answers with the pages still absent and receives them on this thread.
    /// </summary>
    private static void AcceptPostcopyResume(GuestHost host, Connection conn, PostcopyResume resume)
    {
        MigrationDestination? target;
        lock (host.Lock) target = host.Entry(resume.Name)?.PostcopyIncoming;
        string? why = target?._postcopy == null ? $"no post-copy of '{resume.Name}' is in progress on this host"
            : target._ctx.Setup.MigrationId != resume.MigrationId ? $"'{resume.Name}' arrived here by migration {target._ctx.Setup.MigrationId}, not {resume.MigrationId}"
            : null;
        if (why != null || !target!._postcopy!.TakeOver(conn, out why))
        {
            conn.Send(new Envelope { PostcopyResumeReply = new PostcopyResumeReply { Accepted = false, Error = why } });
            host.Log($"refused a post-copy resume of '{resume.Name}' (migration {resume.MigrationId}): {why}");
            return;
        }
        target._postcopy.ReceivePages();
    }
}
