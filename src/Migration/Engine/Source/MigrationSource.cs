using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The sending half of one migration, run on the source host on behalf of `lm migrate`: set-up,
/// then the chosen strategy (<see cref="ISourceStrategy"/>), then the one switchover
/// (<see cref="SourceSwitchover"/>). See Protocol/PROTOCOL.md for the message sequence diagram and
/// the failure table. Invariant: until the decision is GO (taken on the destination's matching
/// ACK) every failure or cancel resumes the guest here; after it the guest belongs to the
/// destination, whether or not GO arrives there (it asks again), and this side keeps its paused
/// copy until the destination confirms it runs (<see cref="HeldCopy"/>).
/// </summary>
internal sealed class MigrationSource
{
    private readonly SourceContext _ctx;
    private readonly SourceSwitchover _switchover;
    private readonly ISourceStrategy _strategy;
    private readonly List<TimelineSample> _timeline = [];

    public MigrationSource(GuestHost host, GuestEntry entry, MigrateCommand command)
    {
        Strategy = command.Strategy;
        if (!Strategies.IsKnown(Strategy)) throw new HostException($"unknown strategy {(int)command.Strategy} (expected {string.Join(", ", Strategies.Names)})");
        _ctx = new SourceContext(host, entry, command, this);
        // A fleet host without an explicit commit step still commits through its store: the destination waits for the record.
        _switchover = new SourceSwitchover(_ctx, host.Options.SwitchoverCommit?.Invoke(host) ?? (host.Ownership.Coordinated ? new OwnershipCommit(host) : new PairwiseCommit(host)));
        _strategy = Strategy switch
        {
            Strategy.Stopcopy => new StopAndCopySource(_ctx, _switchover),
            Strategy.Precopy => new PrecopySource(_ctx, _switchover, autoConverge: command.AutoConverge),
            Strategy.Postcopy => new PostcopySource(_ctx, _switchover),
            Strategy.Log => new LogShippingSource(_ctx, _switchover),
            _ => new AutoSource(_ctx, _switchover),
        };
        _switchover.Strategy = _strategy;
    }

    public string Id => _ctx.Id;
    public Strategy Strategy { get; }
    public MigrationPhase Phase => _ctx.Phase;
    /// <summary>The rollback waits for the store (the guest paused): the host keeps this as the guest's migration until it settles.</summary>
    public bool Unsettled => _switchover.Unsettled;

    /// <summary>Cancels unless the migration has committed; returns false when it is too late.</summary>
    public bool Cancel() => _switchover.Cancel();

    /// <summary>`lm stop` on an unsettled rollback's paused copy: discards it (false when it settled meanwhile).</summary>
    public bool DiscardUnsettled() => _switchover.DiscardUnsettled();

    public MigrationReport Run(Action<MigrationProgress>? progress)
    {
        var ctx = _ctx;
        var token = _switchover.Token;
        var report = new MigrationReport
        {
            Name = ctx.Command.Name, Strategy = Strategy, Source = ctx.Host.Address, Destination = ctx.Command.Target,
            MigrationId = Id, MemorySize = ctx.Guest.Machine.Config.MemorySize,
        };
        using var reporter = new ProgressReporter(this, progress);
        SwitchoverPoint? point = null;
        try
        {
            ctx.Log($"'{ctx.Command.Name}' to {ctx.Command.Target} ({Strategies.Name(Strategy)})");
            Setup(token);
            ctx.Fault(FaultPoint.Setup);
            if (Strategy is not (Strategy.Stopcopy or Strategy.Auto)) ctx.StrategyLog.Switch(Strategy, "chosen");
            point = _strategy.Run(token);
            _switchover.AwaitAckAndCommit(point, token);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or MigrationFailedException or HostException or InvalidOperationException)
        {
            string why = e is OperationCanceledException ? "cancelled" : e.Message;
            if (_switchover.TryAbort())
            {
                report.Success = false;
                report.Error = _switchover.RollBack(why);
                reporter.Stop();
                FillReport(report);
                return report;
            }
            // The matching ACK committed first (on the return-path reader): the guest is the destination's now.
            ctx.Log($"committed before '{why}' could abort it");
        }
        report.Icount = point!.Icount;
        report.Digest = point.Digest;
        report.DigestVerified = true;
        report.Committed = true;
        _switchover.FinishAfterCommit(report, point);
        reporter.Stop();
        FillReport(report);
        return report;
    }

    private void Setup(CancellationToken token)
    {
        var ctx = _ctx;
        var guest = ctx.Guest;
        try { ctx.Epoch = ctx.Host.Ownership.EpochIfOwner(ctx.Command.Name, ctx.Host.Address) ?? throw new OwnershipLostException($"the fleet record of '{ctx.Command.Name}' does not name this host"); }
        catch (OwnershipUnsettledException e) { throw new MigrationFailedException($"not started: {e.Message}"); }
        var conn = ctx.Conn = ctx.Host.Connect(ctx.Command.Target);
        conn.ClientHandshake(Purpose.Migrate);
        conn.SendTimeout = ctx.Peer.Limit; // a peer that stops reading fails the send, it does not hang it
        ctx.Peer.Heard();
        if (ctx.Command.BandwidthBytesPerSecond > 0) conn.Limiter = new TokenBucket((long)ctx.Command.BandwidthBytesPerSecond);
        var identity = MachineIdentities.Of(guest.Machine);
        conn.Send(new Envelope
        {
            Setup = new MigrateSetup
            {
                MigrationId = Id, Name = ctx.Command.Name, MemorySize = guest.Machine.Config.MemorySize, Strategy = Strategy,
                PageCount = (uint)guest.Machine.Memory.PageCount, Source = ctx.Host.Address, ImageName = guest.ImageName,
                Machine = ctx.Host.Options.SentIdentity?.Invoke(identity) ?? identity,
                Disk = ctx.DiskSender.PlanFor(ctx.Command, guest.DrivePath),
            },
        });
        ctx.ReturnPath.Start(conn, $"migrate-{Id}-rx");
        var reply = ctx.ReturnPath.Expect(Envelope.BodyOneofCase.SetupReply, TimeSpan.FromSeconds(10), token).SetupReply;
        if (!reply.Accepted) throw new MigrationFailedException($"destination refused: {reply.Error}");
        ctx.DiskSender.OnSetupReply(reply);
        ctx.Times.SetupDone = ctx.Now;
    }

    // ---- The held copy after commit (the host's table holds this object) ----

    /// <summary>True when the held copy holds post-copy pages (what `--resume` sends).</summary>
    public bool IsPostcopy => _switchover.Held.Postcopy != null;
    /// <summary>What status shows for a held copy: the state and the exits that work from it.</summary>
    public string HeldStatus => _switchover.Held.Status;
    public string ResolveHeld(Decision decision) => _switchover.Held.Resolve(decision);
    public void DiscardHeldCopy() => _switchover.Held.Discard();

    public MigrationReport ResumePostcopy(MigrateCommand command, Action<MigrationProgress>? progress) =>
        (_switchover.Held.Postcopy ?? throw new HostException($"'{_ctx.Command.Name}' holds no post-copy to resume")).ResumeAfterFailure(command, progress);

    // ---- Progress and the report ----

    internal MigrationProgress Snapshot()
    {
        var ctx = _ctx;
        var c = ctx.Conn;
        var p = new MigrationProgress
        {
            Phase = ctx.Phase,
            ElapsedSeconds = ctx.Now,
            BytesCheckpoint = (ulong)(c?.Sent(ByteCategory.Checkpoint) ?? 0),
            BytesLog = (ulong)(c?.Sent(ByteCategory.Log) ?? 0),
            BytesState = (ulong)(c?.Sent(ByteCategory.State) ?? 0),
            BytesProtocol = (ulong)(c?.Sent(ByteCategory.Protocol) ?? 0),
            BytesPostcopy = (ulong)(c?.Sent(ByteCategory.Postcopy) ?? 0),
            BytesDisk = (ulong)(c?.Sent(ByteCategory.Disk) ?? 0),
            SourceIcount = ctx.Guest.Machine.Icount,
            ReplayIcount = ctx.ReturnPath.ReplayIcount,
            Throttle = ctx.Throttle.Value,
            PagesSent = (uint)ctx.Pages.PagesDone,
            PagesTotal = (uint)ctx.Guest.Machine.Memory.PageCount,
            Strategy = ctx.StrategyLog.Current ?? Strategy,
        };
        _strategy.FillProgress(p);
        p.ReplayLagSeconds = ReplayLagSeconds(p.SourceIcount, p.ReplayIcount);
        return p;
    }

    /// <summary>Seconds the destination needs to replay what it has not yet, at its measured speed.</summary>
    private double ReplayLagSeconds(ulong source, ulong replay)
    {
        if (_ctx.StrategyLog.Current != Strategy.Log || replay == 0 || source <= replay) return 0;
        double mips = _ctx.ReturnPath.ReplayMips > 1 ? _ctx.ReturnPath.ReplayMips : 100;
        return (source - replay) / (mips * 1e6);
    }

    internal void AddSample(TimelineSample sample)
    {
        sample.RateLimitBytesPerSecond = _ctx.Conn?.Limiter?.Rate ?? 0;
        lock (_timeline) _timeline.Add(sample);
    }

    private void FillReport(MigrationReport r)
    {
        var t = _ctx.Times;
        double end = t.Resumed >= 0 ? t.Resumed : _ctx.Now;
        r.SetupSeconds = t.SetupDone;
        r.CheckpointSeconds = t.CheckpointDone > 0 ? t.CheckpointDone - t.SetupDone : 0;
        r.LogSeconds = t.LogDone > 0 ? Math.Max(0, t.LogDone - t.CheckpointDone) : 0;
        r.SwitchoverSeconds = t.Pause >= 0 && r.Success ? end - Math.Max(t.Pause, t.LogDone) : 0;
        if (Strategy == Strategy.Stopcopy && t.Pause >= 0 && r.Success) r.SwitchoverSeconds = end - t.Pause;
        r.TotalSeconds = end;
        r.DowntimeSeconds = t.Pause >= 0 && r.Success ? end - t.Pause : 0;
        r.DowntimeSourceViewSeconds = r.DowntimeSeconds;
        r.DowntimeClock = "source view";
        if (r.Success && _switchover.ResumedMessage is { ResumedMonotonicNs: > 0 } resumed && resumed.ClockId != "" && resumed.ClockId == HostClock.Id)
        {
            // Both hosts read one clock: the guest was down from our pause to the destination's resume.
            double exact = ((double)resumed.ResumedMonotonicNs - HostClock.ToNanoseconds(t.PauseTimestamp)) / 1e9;
            if (exact > 0 && exact <= r.DowntimeSeconds)
            {
                r.DowntimeSeconds = exact;
                r.DowntimeClock = "shared clock";
            }
        }
        if (_ctx.Conn is { } c)
        {
            r.BytesCheckpoint = (ulong)c.Sent(ByteCategory.Checkpoint);
            r.BytesLog = (ulong)c.Sent(ByteCategory.Log);
            r.BytesState = (ulong)c.Sent(ByteCategory.State);
            r.BytesProtocol = (ulong)c.Sent(ByteCategory.Protocol);
            r.BytesPostcopy = (ulong)c.Sent(ByteCategory.Postcopy);
            r.BytesDisk = (ulong)c.Sent(ByteCategory.Disk);
        }
        _ctx.DiskSender.FillReport(r);
        r.PagesSent = (uint)_ctx.Pages.PagesSent;
        r.ZeroPages = (uint)_ctx.Pages.ZeroPages;
        r.RawBytesCheckpoint = (ulong)_ctx.Pages.RawBytes;
        r.MaxThrottle = _ctx.Throttle.Max;
        r.ThrottledSeconds = _ctx.Throttle.HeldBack.TotalSeconds;
        _ctx.StrategyLog.FillReport(r);
        _strategy.FillReport(r);
        lock (_timeline) r.Timeline.AddRange(_timeline);
    }
}

/// <summary>The migration cannot go on; before commit the guest resumes on the source.</summary>
public class MigrationFailedException(string message) : Exception(message);
