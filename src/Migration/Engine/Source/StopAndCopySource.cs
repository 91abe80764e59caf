using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>Stop-and-copy (the baseline): pause, send every page and the disk's blocks the destination lacks, then the final state.</summary>
internal sealed class StopAndCopySource(SourceContext ctx, SourceSwitchover switchover) : ISourceStrategy
{
    public SwitchoverPoint Run(CancellationToken token)
    {
        ctx.Phase = MigrationPhase.StopAndCopy;
        switchover.Pause();
        var memory = ctx.Guest.Machine.Memory;
        ctx.Pages.Send(ctx.Conn!, memory.PageCount, memory.IsZeroPage, (p, dst) => memory.PageSpan(p).CopyTo(dst),
            ByteCategory.Checkpoint, token, () => ctx.Fault(FaultPoint.Checkpoint));
        ctx.DiskSender.SendAtPause(token);
        ctx.Times.CheckpointDone = ctx.Times.LogDone = ctx.Now;
        ulong digest = ctx.Guest.Machine.ComputeDigest();
        switchover.SendFinalState(token, digest);
        return new SwitchoverPoint(ctx.Guest.Machine.Icount, digest);
    }

    public void FillReport(MigrationReport report) { }
    public void FillProgress(MigrationProgress progress) { }
    public void Release() { }
}
