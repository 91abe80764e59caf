using LiveMigration.Guest;
using LiveMigration.Guest.Memory;
using LiveMigration.Trace.Compression;
using LiveMigration.Guest.State;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Xbzrle;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Destination side of pre-copy and of the auto strategy's fallback. Pre-copy pages arrive as
/// <see cref="DeltaPages"/>: whole pages, or XBZRLE deltas applied to this side's current copy of
/// the page, which is always the copy the source last sent (the source's page cache holds the same
/// bytes), or after a fallback the C0 copy. For the auto strategy the machine keeps a copy-on-write
/// snapshot of C0 and a dirty client started at C0 while it replays, so that on
/// <see cref="PrecopyFallback"/> it can drop the replay and return exactly to C0 (digest-checked).
/// </summary>
internal sealed partial class MigrationDestination
{
    private bool _fellBack;
    private MachineSnapshot? _destC0;
    private DirtyClient? _destSinceC0;
    private readonly PrecopyPageDecoder _deltaDecoder = new();
    private readonly byte[] _pageScratch = new byte[GuestMemory.PageSize];

    /// <summary>True when the final state's device state is applied as is (nothing replays to it).</summary>
    private bool RestoresFinalDeviceState => _setup.Strategy is Strategy.Stopcopy or Strategy.Precopy || _fellBack;

    private void KeepC0(Machine machine, CheckpointDone done)
    {
        _destC0 = machine.TakeSnapshot();
        _destSinceC0 = machine.Memory.CreateDirtyClient("since-c0");
        _destSinceC0.CollectAndClear(new List<int>()); // a new client starts all dirty
    }

    private void OnDeltaPages(DeltaPages batch)
    {
        var memory = _machine!.Memory;
        _deltaDecoder.Apply(memory, batch);
        memory.RefreshRamDigest(); // hash as pages arrive, not all at the verification in the downtime
    }

    /// <summary>Lets go of the fallback's C0 snapshot and its dirty client (after the fallback, or once the final state is verified).</summary>
    private void DropC0()
    {
        _destSinceC0?.Release();
        _destSinceC0 = null;
        _destC0?.Dispose();
        _destC0 = null;
    }

    /// <summary>The source gave up on log shipping: stop replaying and return to C0, exactly.</summary>
    private void OnPrecopyFallback(PrecopyFallback fallback)
    {
        if (_setup.Strategy != Strategy.Auto || _destC0 == null || _destSinceC0 == null)
            throw new ProtocolException("fallback to pre-copy without a retained checkpoint C0");
        StopReplay();
        if (_replayThread != null && _replayThread.IsAlive) throw new MigrationFailedException("the replay did not stop for the fallback to pre-copy");
        _session?.Dispose();
        _session = null;
        lock (_incoming) _incoming.Clear();
        _fellBack = true;

        var machine = _machine!;
        var memory = machine.Memory;
        var pages = new List<int>();
        _destSinceC0.CollectAndClear(pages);
        foreach (int page in pages)
        {
            if (_destC0.Memory.IsZeroPage(page)) memory.ZeroPage(page);
            else
            {
                _destC0.Memory.ReadPage(page, _pageScratch);
                memory.WritePage(page, _pageScratch);
            }
        }
        machine.RestoreDeviceState(new StateReader(_destC0.DeviceState));
        ulong digest = machine.ComputeDigest();
        if (machine.Icount != _destC0.Icount || digest != _destC0.Digest || _destC0.Icount != fallback.C0Icount)
            throw new MigrationFailedException($"dropping the replay did not restore C0: digest {digest:x16} at icount {machine.Icount}, C0 is {_destC0.Digest:x16} at {_destC0.Icount} (source: {fallback.C0Icount})");
        DropC0();
        State = "precopy";
        _host.Log($"'{_setup.Name}': source fell back to pre-copy ({fallback.Reason}); replay dropped, {pages.Count} pages back to C0 (digest verified)");
    }
}

internal sealed partial class MigrationDestination
{
    /// <summary>Test hook (<see cref="Hosting.HostOptions.ReplayMipsCap"/>): sleeps so the replay averages at most <paramref name="mips"/>.</summary>
    private void CapReplaySpeed(ulong ran, long startTimestamp, double mips)
    {
        double due = ran / (mips * 1e6) - System.Diagnostics.Stopwatch.GetElapsedTime(startTimestamp).TotalSeconds;
        if (due > 0) Thread.Sleep(TimeSpan.FromSeconds(due));
    }
}
