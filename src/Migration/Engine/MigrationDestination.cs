using Google.Protobuf;
using LiveMigration.Guest;
using LiveMigration.Guest.State;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The receiving half of one migration. It builds the machine from what arrives, verifies the
/// final digest at the source's icount and ACKs; the guest runs here only after GO — from the
/// connection, from a <see cref="GoQuery"/> to the source after the connection was lost, or from
/// an operator's `lm resolve`.
/// </summary>
internal sealed partial class MigrationDestination
{
    private readonly GuestHost _host;
    private Connection _conn; // replaced when a post-copy resume arrives on a new connection
    private readonly object _lock = new();
    private MigrateSetup _setup = new();
    private GuestEntry? _entry;
    private Machine? _machine;
    private FinalState? _final;
    private bool _resolved;
    private GuestInstance? _instance;
    private long _epoch;
    /// <summary>Fleet: completes when the guest's record shows the commit (true) or another owner (false).</summary>
    private Task<bool>? _record;

    public MigrationDestination(GuestHost host, Connection conn)
    {
        _host = host;
        _conn = conn;
    }

    public string State { get; private set; } = "arriving";
    public ulong MemorySize => _setup.MemorySize;
    /// <summary>True once the ACK went: only the source (or an operator) can settle it now.</summary>
    public bool AwaitingGo => State == "awaiting-go";

    public void Run()
    {
        try
        {
            _conn.ReceiveTimeout = TimeSpan.FromSeconds(10);
            var first = _conn.Receive();
            if (first.BodyCase == Envelope.BodyOneofCase.PostcopyResume)
            {
                _conn.ReceiveTimeout = TimeSpan.FromSeconds(60);
                try { AcceptPostcopyResume(_host, _conn, first.PostcopyResume); }
                catch (Exception e) when (e is IOException or ObjectDisposedException) { _host.Log($"post-copy resume connection lost: {e.Message}"); }
                return;
            }
            if (first.BodyCase != Envelope.BodyOneofCase.Setup) throw new ProtocolException($"expected MigrateSetup, got {first.BodyCase}");
            _conn.ReceiveTimeout = TimeSpan.FromSeconds(60);
            if (!Accept(first.Setup, out string? why))
            {
                _conn.Send(new Envelope { SetupReply = new SetupReply { Accepted = false, Error = why } });
                _host.Log($"refused migration of '{first.Setup.Name}' from {first.Setup.Source}: {why}");
                return;
            }
            _conn.Send(new Envelope { SetupReply = new SetupReply { Accepted = true } });
            new Thread(Heartbeats) { IsBackground = true, Name = $"heartbeat-{_setup.Name}" }.Start();
            Receive();
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ProtocolException or MigrationFailedException)
        {
            ConnectionLost(e.Message);
        }
        catch (Exception e)
        {
            // Whatever a hostile or broken stream trips on, the incoming copy goes entirely (name, machine, console).
            ConnectionLost($"{e.GetType().Name}: {e.Message}");
        }
    }

    private bool Accept(MigrateSetup setup, out string? why)
    {
        _setup = setup;
        why = null;
        if (setup.MemorySize == 0 || setup.MemorySize % 4096 != 0 || setup.MemorySize > _host.Options.MaxMemorySize)
            why = $"machine config not supported: {setup.MemorySize >> 20} MiB of RAM (this host allows up to {_host.Options.MaxMemorySize >> 20} MiB)";
        else if (setup.PageCount != setup.MemorySize / 4096)
            why = $"machine config mismatch: {setup.PageCount} pages for {setup.MemorySize} bytes";
        else if (!Strategies.IsKnown(setup.Strategy))
            why = $"unknown strategy {(int)setup.Strategy} (a peer of a newer build)";
        // FLEET: a draining host takes no guests; the record must name the source (its epoch is what the commit moves).
        else if (_host.Ownership.RefuseNewGuests() is { } refused) why = refused;
        else if (_host.Ownership.EpochIfOwner(setup.Name, setup.Source) is long epoch) _epoch = epoch;
        else why = $"the fleet record of '{setup.Name}' does not name {setup.Source}";
        if (why != null) return false;
        lock (_host.Lock)
        {
            var existing = _host.Entry(setup.Name);
            if (existing?.Busy() is { } busy)
            {
                why = $"a guest named '{setup.Name}' already {busy} on this host";
                return false;
            }
            if (_host.AdmitIncoming(setup, _conn.Peer) is { } full)
            {
                why = full;
                return false;
            }
            _entry = new GuestEntry(setup.Name) { Arriving = this, ArrivedBy = setup.MigrationId };
            _host.SetEntry(_entry);
        }
        var machine = new Machine(new MachineConfig { MemorySize = setup.MemorySize }, NullHostPort.Instance, _host.Options.CompileBlocks);
        why = MachineIdentities.Mismatch(MachineIdentities.Of(machine), setup.Machine);
        if (why != null)
        {
            machine.Dispose();
            lock (_host.Lock) _host.RemoveEntry(_entry);
            return false;
        }
        _machine = machine;
        PrepareResume();
        _host.Log($"receiving '{setup.Name}' from {setup.Source} ({Strategies.Name(setup.Strategy)}, migration {setup.MigrationId})");
        return true;
    }

    private void Receive()
    {
        while (true)
        {
            WhileStalled();
            var e = _conn.Receive();
            switch (e.BodyCase)
            {
                // Under the lock a discard takes: a host shutting down must not free the RAM a batch is being written into.
                case Envelope.BodyOneofCase.Pages: lock (_lock) { if (_resolved) return; PageReceiver.Apply(_machine!.Memory, e.Pages); } break;
                case Envelope.BodyOneofCase.ZeroPages: lock (_lock) { if (_resolved) return; PageReceiver.Apply(_machine!.Memory, e.ZeroPages); } break;
                case Envelope.BodyOneofCase.CheckpointDone: OnCheckpointDone(e.CheckpointDone); break;
                case Envelope.BodyOneofCase.Log when _fellBack: break; // in flight when the source fell back
                case Envelope.BodyOneofCase.Log: OnLog(e.Log); break;
                case Envelope.BodyOneofCase.DeltaPages: lock (_lock) { if (_resolved) return; OnDeltaPages(e.DeltaPages); } break;
                case Envelope.BodyOneofCase.PrecopyFallback: OnPrecopyFallback(e.PrecopyFallback); break;
                case Envelope.BodyOneofCase.PostcopyManifest: _manifest = e.PostcopyManifest; break;
                case Envelope.BodyOneofCase.FinalState when _manifest != null: // post-copy, or auto's last resort after pre-copy
                    if (!VerifyPostcopy(e.FinalState)) return;
                    break;
                case Envelope.BodyOneofCase.FinalState:
                    if (!Verify(e.FinalState)) return;
                    break;
                case Envelope.BodyOneofCase.Go:
                    if (_host.Options.DestinationFault?.Invoke(DestinationFaultPoint.BeforeResume) == true) return; // crashed here (the test took the host down)
                    Start(e.Go.ConsoleInput.ToByteArray(), e.Go.ConsoleBacklog.ToByteArray(), "GO");
                    if (_manifest != null) ReceivePostcopyPages();
                    return;
                case Envelope.BodyOneofCase.Abort:
                    Discard($"the source aborted: {e.Abort.Reason}");
                    return;
                default:
                    throw new ProtocolException($"unexpected {e.BodyCase} during a migration");
            }
        }
    }

    /// <summary>Brings the machine to the source's final icount, compares digests, ACKs or aborts.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private bool Verify(FinalState final)
    {
        State = "verifying";
        _final = final;
        var machine = _machine!;
        try { CatchUp(final); }
        catch (MigrationFailedException e)
        {
            try { _conn.Send(new Envelope { Abort = new Abort { Reason = e.Message } }); } catch (IOException) { }
            Discard(e.Message);
            return false;
        }
        ulong digest = machine.ComputeDigest();
        if (machine.Icount != final.Icount || digest != final.Digest)
        {
            string why = $"digest mismatch at icount {final.Icount}: destination has {digest:x16} at {machine.Icount}, source sent {final.Digest:x16}";
            try { _conn.Send(new Envelope { Abort = new Abort { Reason = why } }); } catch (IOException) { }
            Discard(why);
            return false;
        }
        State = "awaiting-go";
        if (_host.Ownership.Coordinated) _record = _host.Ownership.AwaitCommitted(_setup.Name, _setup.Source, _host.Address, _epoch, _host.ShuttingDown); // FLEET
        _conn.Send(new Envelope { Ack = new Ack { Icount = final.Icount, Digest = digest } });
        DropC0(); // no fallback can come after the final state: the guest must not run on with a snapshot to preserve
        _host.Log($"'{_setup.Name}' verified at icount {final.Icount} digest {digest:x16}; ACK sent, awaiting GO");
        return true;
    }

    private void ConnectionLost(string why)
    {
        lock (_lock)
        {
            if (_resolved) return;
            if (State != "awaiting-go")
            {
                DiscardLocked($"connection lost before ACK ({why})");
                return;
            }
        }
        if (_record != null) // FLEET: the record decides, whatever happened to GO
        {
            _host.Log($"'{_setup.Name}': connection lost after ACK ({why}); the fleet record decides");
            new Thread(AwaitRecordLoop) { IsBackground = true, Name = "await-record" }.Start();
            return;
        }
        // ACK was sent: only the source knows whether it committed. Ask it until it answers.
        _host.Log($"'{_setup.Name}': connection lost after ACK ({why}); asking {_setup.Source} for GO");
        new Thread(AskForGoLoop) { IsBackground = true, Name = "await-go" }.Start();
    }

    private void AskForGoLoop()
    {
        while (!_host.ShuttingDown.IsCancellationRequested)
        {
            // Wait first: the source may still be finishing its side of the cut.
            _host.ShuttingDown.WaitHandle.WaitOne(_host.Options.GoQueryInterval);
            lock (_lock) if (_resolved) return;
            var answer = QuerySource();
            if (answer != null && Apply(answer)) return;
        }
    }

    private GoAnswer? QuerySource()
    {
        try
        {
            using var c = _host.Connect(_setup.Source, TimeSpan.FromSeconds(2), expect: _conn.Peer);
            c.ClientHandshake(Purpose.Control);
            c.ReceiveTimeout = TimeSpan.FromSeconds(5);
            c.Send(new Envelope { GoQuery = new GoQuery { MigrationId = _setup.MigrationId } });
            var reply = c.Receive();
            return reply.BodyCase == Envelope.BodyOneofCase.GoAnswer ? reply.GoAnswer : null;
        }
        catch (Exception e) when (e is IOException or ProtocolException) { return null; }
    }

    /// <summary>
    /// Fleet, after the connection was lost past the ACK: the guest runs here once the record shows
    /// the commit, or once this host took it over because the source's lease is gone; it is
    /// discarded when the record names anyone else.
    /// </summary>
    private void AwaitRecordLoop()
    {
        while (!_host.ShuttingDown.IsCancellationRequested)
        {
            lock (_lock) if (_resolved) return;
            if (_record!.Wait(_host.Options.GoQueryInterval))
            {
                if (!_record.Result) { Discard("the fleet record names another host"); return; }
                var answer = QuerySource(); // the source's console bytes, when it is still there
                Start(answer?.Decision == Decision.Go ? answer.ConsoleInput.ToByteArray() : [], answer?.Decision == Decision.Go ? answer.ConsoleBacklog.ToByteArray() : [], "the committed fleet record");
                return;
            }
            if (_host.Ownership.TakeOver(_setup.Name, _setup.Source, _host.Address, _epoch))
                _host.Log($"'{_setup.Name}': its source's lease is gone; took it over (epoch {_epoch + 1})");
        }
    }

    /// <returns>True when the answer settled the migration.</returns>
    private bool Apply(GoAnswer answer)
    {
        switch (answer.Decision)
        {
            case Decision.Go: Start(answer.ConsoleInput.ToByteArray(), answer.ConsoleBacklog.ToByteArray(), "GO (asked again)"); return true;
            case Decision.Abort: Discard("the source resumed the guest"); return true;
            default: return false; // pending, or unknown (a restarted source): keep asking; an operator can decide
        }
    }

    /// <summary>`lm resolve`: pending asks the source now; go / abort is the operator's decision.</summary>
    public string Resolve(Decision decision)
    {
        lock (_lock)
        {
            if (_resolved) return "already resolved";
            if (State != "awaiting-go") throw new HostException($"'{_setup.Name}' is still {State}; its migration is not waiting for GO");
        }
        switch (decision)
        {
            case Decision.Go: Start([], [], "operator's resolve"); return $"'{_setup.Name}' runs here (operator's decision)";
            case Decision.Abort: Discard("operator's resolve"); return $"discarded the incoming copy of '{_setup.Name}'";
            case Decision.Pending:
                var answer = QuerySource() ?? throw new HostException($"the source {_setup.Source} is unreachable; decide with --decision go (only if the source is gone for good) or abort");
                if (!Apply(answer)) throw new HostException($"the source answers '{answer.Decision}'; try again later or decide with --decision");
                return answer.Decision == Decision.Go ? $"'{_setup.Name}' runs here (source said go)" : $"discarded: the source kept '{_setup.Name}'";
            default: throw new HostException($"decision {decision} does not apply here (expected go or abort)");
        }
    }

    /// <summary>
    /// As soon as the migration is accepted: the console, the port and a parked guest thread are built
    /// now, so GO only has to wake the thread (none of this is downtime). The instance binds its port
    /// to the machine only when it first runs, after the replay is done with it.
    /// </summary>
    private void PrepareResume()
    {
        var console = _host.CreateConsole();
        _ready = new GuestInstance(_setup.Name, _setup.ImageName, _machine!, _host.NewPort(console));
        _ready.StartPaused();
    }

    private GuestInstance? _ready;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private void Start(byte[] consoleInput, byte[] backlog, string why)
    {
        // FLEET: resume only on the committed record (GO alone is not enough).
        if (_record != null && !AwaitRecord()) { Discard("the fleet record names another host"); return; }
        GuestInstance instance;
        long resumedAt;
        lock (_lock)
        {
            if (_resolved) return;
            if (State != "awaiting-go" || _final == null) throw new ProtocolException("GO before the final state was verified");
            _resolved = true;
            instance = _ready ?? throw new InvalidOperationException("no prepared guest instance");
            instance.Port.Rebase(_final.Mtime);
            instance.Console.Prepend(consoleInput);
            instance.Console.AddBacklog(backlog);
            if (_manifest != null) _machine!.Memory.PageFetcher = FetchPage;
            instance.Resume(); // the guest runs here from now on
            resumedAt = System.Diagnostics.Stopwatch.GetTimestamp();
            lock (_host.Lock)
            {
                _entry!.Arriving = null;
                _entry.Instance = instance;
                _entry.MovedTo = null;
                if (_manifest != null) _entry.PostcopyIncoming = this;
            }
            State = "running";
            _instance = instance;
        }
        string consoleAddress = _host.ConsoleAddress(instance.Console);
        try { _conn.Send(new Envelope { Resumed = new Resumed { Console = consoleAddress, ResumedMonotonicNs = HostClock.ToNanoseconds(resumedAt), ClockId = HostClock.Id } }); }
        catch (IOException) { }
        _host.Log($"'{_setup.Name}' resumed at icount {_final!.Icount} on {why}; console {consoleAddress}");
    }


    /// <summary>
    /// Proof of life for the source, with the bytes taken off the connection so far, until the guest
    /// runs here or is discarded. A stalled host (SIGSTOP) stops beating, and the source sees it.
    /// </summary>
    private void Heartbeats()
    {
        var conn = _conn;
        var interval = _host.Options.HeartbeatInterval;
        while (!_host.ShuttingDown.IsCancellationRequested)
        {
            Thread.Sleep(interval);
            WhileStalled();
            lock (_lock) if (_resolved) return;
            try { conn.Send(new Envelope { Heartbeat = new Heartbeat { ReceivedBytes = (ulong)conn.ReceivedTotal } }); }
            catch (IOException) { return; }
        }
    }

    /// <summary>Test hook (<see cref="HostOptions.Stalled"/>): the migration's threads stand still, as under SIGSTOP.</summary>
    private void WhileStalled()
    {
        while (_host.Options.Stalled?.Invoke() == true) Thread.Sleep(5);
    }

    private bool AwaitRecord()
    {
        while (!_record!.Wait(1000))
        {
            if (_host.ShuttingDown.IsCancellationRequested) return false;
            _host.Log($"'{_setup.Name}': GO arrived, waiting for the committed fleet record");
        }
        return _record.Result;
    }

    public void Discard(string why)
    {
        lock (_lock) DiscardLocked(why);
    }

    private void DiscardLocked(string why)
    {
        if (_resolved) return;
        _resolved = true;
        State = "discarded";
        StopReplay();
        lock (_host.Lock) if (_entry != null) _host.RemoveEntry(_entry);
        if (_ready != null) _ready.Dispose(); // its thread, console and machine
        else _machine?.Dispose();
        _ready = null;
        _machine = null;
        _host.Log($"discarded incoming '{_setup.Name}': {why}");
    }
}

