using System.Runtime.CompilerServices;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The switchover, destination side, the same for every strategy: bring the machine to the final
/// state (the strategy's part), verify it, ACK; then the guest runs here only after GO — from the
/// connection, from a <see cref="GoQuery"/> to the source after the connection was lost, or from
/// an operator's `lm resolve`. A copy that cannot verify, or whose source aborted, is discarded.
/// </summary>
internal sealed class DestinationSwitchover(DestinationContext ctx, Action stopStrategies)
{
    private GuestInstance? _ready;

    /// <summary>The guest, once it runs here.</summary>
    public GuestInstance? Instance { get; private set; }

    /// <summary>
    /// As soon as the migration is accepted: the console, the port and a parked guest thread are built
    /// now, so GO only has to wake the thread (none of this is downtime). The instance binds its port
    /// to the machine only when it first runs, after the replay is done with it.
    /// </summary>
    public void PrepareResume()
    {
        var console = ctx.Host.CreateConsole();
        _ready = new GuestInstance(ctx.Setup.Name, ctx.Setup.ImageName, ctx.Machine!, ctx.Host.NewPort(console));
        _ready.StartPaused();
    }

    /// <summary>Brings the machine to the source's final icount through <paramref name="strategy"/>, compares digests, ACKs or aborts.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public bool Verify(FinalState final, IArrivalStrategy strategy)
    {
        ctx.State = DestinationState.Verifying;
        ctx.Final = final;
        var host = ctx.Host;
        // FLEET: the record watch opens before the verification, so etcd has it in step when the source
        // commits (a watch that starts at a revision already passed waits for etcd's ~100 ms catch-up).
        if (host.Ownership.Coordinated)
        {
            ctx.RecordWatch?.Cancel();
            ctx.RecordWatch = CancellationTokenSource.CreateLinkedTokenSource(host.ShuttingDown);
            ctx.Record = host.Ownership.AwaitCommitted(ctx.Name, ctx.Setup.Source, host.Address, ctx.Epoch, ctx.RecordWatch.Token);
        }
        string? why;
        ulong digest;
        try
        {
            digest = 0;
            why = ctx.Disk is { Ready: false } ? "final state before the guest's disk arrived" : strategy.ReachFinal(final, out digest);
        }
        catch (MigrationFailedException e) { why = e.Message; digest = 0; }
        if (why != null)
        {
            ctx.SendAbort(why);
            Discard(why);
            return false;
        }
        ctx.State = DestinationState.AwaitingGo;
        ctx.Conn.Send(new Envelope { Ack = new Ack { Icount = final.Icount, Digest = digest } });
        strategy.AfterAck(final, digest);
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public void Start(byte[] consoleInput, byte[] backlog, string why, IArrivalStrategy strategy)
    {
        // FLEET: resume only on the committed record (GO alone is not enough).
        if (ctx.Record != null && !AwaitRecord()) { Discard("the fleet record names another host"); return; }
        if (ctx.Record != null && ctx.Host.Options.DestinationFault?.Invoke(DestinationFaultPoint.RecordSeen) == true) return; // crashed here (the test took the host down)
        GuestInstance instance;
        long resumedAt;
        lock (ctx.Lock)
        {
            if (ctx.Resolved) return;
            if (ctx.State != DestinationState.AwaitingGo || ctx.Final == null) throw new ProtocolException("GO before the final state was verified");
            ctx.Resolved = true;
            instance = _ready ?? throw new InvalidOperationException("no prepared guest instance");
            instance.Port.Rebase(ctx.Final.Mtime);
            instance.Console.Prepend(consoleInput);
            instance.Console.AddBacklog(backlog);
            strategy.BeforeResume();
            CommitDisk(instance);
            instance.Resume(); // the guest runs here from now on
            resumedAt = System.Diagnostics.Stopwatch.GetTimestamp();
            lock (ctx.Host.Lock)
            {
                var entry = ctx.Entry!;
                entry.Arriving = null;
                entry.Instance = instance;
                entry.MovedTo = null;
                if (strategy.ServesAfterGo) entry.PostcopyIncoming = ctx.Owner;
            }
            ctx.State = DestinationState.Running;
            Instance = instance;
        }
        string consoleAddress = ctx.Host.ConsoleAddress(instance.Console);
        try { ctx.Conn.Send(new Envelope { Resumed = new Resumed { Console = consoleAddress, ResumedMonotonicNs = HostClock.ToNanoseconds(resumedAt), ClockId = HostClock.Id } }); }
        catch (IOException) { }
        ctx.Host.Log($"'{ctx.Name}' resumed at icount {ctx.Final!.Icount} on {why}; console {consoleAddress}");
    }

    /// <summary>GO: the disk's image becomes this host's (flushed, renamed into place); a failure leaves the guest on the temporary file, said loudly.</summary>
    private void CommitDisk(GuestInstance instance)
    {
        if (ctx.Disk is not { } disk) return;
        try { disk.Commit(instance); }
        catch (IOException e) { ctx.Host.Log($"'{ctx.Name}': the disk image could not be put in place at {disk.Path}: {e.Message}; the guest runs on with it where it is"); }
    }

    /// <summary>The connection went: before ACK the copy goes; after it only the source knows, so ask it until it answers.</summary>
    public void ConnectionLost(string why, Func<IArrivalStrategy> strategy)
    {
        lock (ctx.Lock)
        {
            if (ctx.Resolved) return;
            if (ctx.State != DestinationState.AwaitingGo)
            {
                DiscardLocked($"connection lost before ACK ({why})");
                return;
            }
        }
        if (ctx.Record != null) // FLEET: the record decides, whatever happened to GO
        {
            ctx.Host.Log($"'{ctx.Name}': connection lost after ACK ({why}); the fleet record decides");
            new Thread(() => AwaitRecordLoop(strategy())) { IsBackground = true, Name = "await-record" }.Start();
            return;
        }
        ctx.Host.Log($"'{ctx.Name}': connection lost after ACK ({why}); asking {ctx.Setup.Source} for GO");
        new Thread(() => AskForGoLoop(strategy())) { IsBackground = true, Name = "await-go" }.Start();
    }

    private void AskForGoLoop(IArrivalStrategy strategy)
    {
        while (!ctx.Host.ShuttingDown.IsCancellationRequested)
        {
            // Wait first: the source may still be finishing its side of the cut.
            ctx.Host.ShuttingDown.WaitHandle.WaitOne(ctx.Host.Options.GoQueryInterval);
            lock (ctx.Lock) if (ctx.Resolved) return;
            var answer = QuerySource();
            if (answer != null && Apply(answer, strategy)) return;
        }
    }

    /// <summary>
    /// Fleet, after the connection was lost past the ACK: the guest runs here once the record shows
    /// the commit, or once this host took it over because the source's lease is gone; it is
    /// discarded when the record names anyone else.
    /// </summary>
    private void AwaitRecordLoop(IArrivalStrategy strategy)
    {
        var host = ctx.Host;
        while (!host.ShuttingDown.IsCancellationRequested)
        {
            lock (ctx.Lock) if (ctx.Resolved) return;
            if (ctx.Record!.Wait(host.Options.GoQueryInterval))
            {
                if (!ctx.Record.Result) { Discard("the fleet record names another host"); return; }
                var answer = QuerySource(); // the source's console bytes, when it is still there
                bool go = answer?.Decision == Decision.Go;
                Start(go ? answer!.ConsoleInput.ToByteArray() : [], go ? answer!.ConsoleBacklog.ToByteArray() : [], "the committed fleet record", strategy);
                return;
            }
            if (host.Ownership.TakeOver(ctx.Name, ctx.Setup.Source, host.Address, ctx.Epoch))
                host.Log($"'{ctx.Name}': its source's lease is gone; took it over (epoch {ctx.Epoch + 1})");
        }
    }

    private bool AwaitRecord()
    {
        while (!ctx.Record!.Wait(1000))
        {
            if (ctx.Host.ShuttingDown.IsCancellationRequested) return false;
            ctx.Host.Log($"'{ctx.Name}': GO arrived, waiting for the committed fleet record");
        }
        return ctx.Record.Result;
    }

    private GoAnswer? QuerySource()
    {
        try
        {
            using var c = ctx.Host.Connect(ctx.Setup.Source, TimeSpan.FromSeconds(2), expect: ctx.Conn.Peer);
            c.ClientHandshake(Purpose.Control);
            c.ReceiveTimeout = TimeSpan.FromSeconds(5);
            c.Send(new Envelope { GoQuery = new GoQuery { MigrationId = ctx.Setup.MigrationId } });
            var reply = c.Receive();
            return reply.BodyCase == Envelope.BodyOneofCase.GoAnswer ? reply.GoAnswer : null;
        }
        catch (Exception e) when (e is IOException or ProtocolException) { return null; }
    }

    /// <returns>True when the answer settled the migration.</returns>
    private bool Apply(GoAnswer answer, IArrivalStrategy strategy)
    {
        switch (answer.Decision)
        {
            case Decision.Go: Start(answer.ConsoleInput.ToByteArray(), answer.ConsoleBacklog.ToByteArray(), "GO (asked again)", strategy); return true;
            case Decision.Abort: Discard("the source resumed the guest"); return true;
            default: return false; // pending, or unknown (a restarted source): keep asking; an operator can decide
        }
    }

    /// <summary>`lm resolve`: pending asks the source now; go / abort is the operator's decision.</summary>
    public string Resolve(Decision decision, IArrivalStrategy strategy)
    {
        string name = ctx.Name;
        lock (ctx.Lock)
        {
            if (ctx.Resolved) return "already resolved";
            if (ctx.State != DestinationState.AwaitingGo) throw new HostException($"'{name}' is still {DestinationStates.Name(ctx.State)}; its migration is not waiting for GO");
        }
        switch (decision)
        {
            case Decision.Go: Start([], [], "operator's resolve", strategy); return $"'{name}' runs here (operator's decision)";
            case Decision.Abort: Discard("operator's resolve"); return $"discarded the incoming copy of '{name}'";
            case Decision.Pending:
                var answer = QuerySource() ?? throw new HostException($"the source {ctx.Setup.Source} is unreachable; decide with --decision go (only if the source is gone for good) or abort");
                if (!Apply(answer, strategy)) throw new HostException($"the source answers '{answer.Decision}'; try again later or decide with --decision");
                return answer.Decision == Decision.Go ? $"'{name}' runs here (source said go)" : $"discarded: the source kept '{name}'";
            default: throw new HostException($"decision {decision} does not apply here (expected go or abort)");
        }
    }

    /// <summary>The incoming copy goes entirely: name, machine, console.</summary>
    public void Discard(string why)
    {
        lock (ctx.Lock) DiscardLocked(why);
    }

    private void DiscardLocked(string why)
    {
        if (ctx.Resolved) return;
        ctx.Resolved = true;
        ctx.State = DestinationState.Discarded;
        ctx.RecordWatch?.Cancel(); // a copy that will never run has no record to wait for
        stopStrategies();
        lock (ctx.Host.Lock) if (ctx.Entry != null) ctx.Host.RemoveEntry(ctx.Entry);
        if (_ready != null) _ready.Dispose(); // its thread, console, machine and disk
        else ctx.Machine?.Dispose();
        ctx.Disk?.Abort(); // the temporary image goes; the target was never touched
        _ready = null;
        ctx.Machine = null;
        ctx.Host.Log($"discarded incoming '{ctx.Name}': {why}");
    }
}
