using System.Globalization;
using LiveMigration.Fleet.Etcd;
using LiveMigration.Fleet.Etcd.Api;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Guest;
using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Migration.Engine;
using LiveMigration.Trace;

namespace LiveMigration.Fleet;

/// <summary>
/// Checkpoints on shared storage and `lm recover`. Layout: DIR/NAME/EPOCH.ckpt, one file per epoch
/// (the owner of that epoch rewrites it; a source writes the state it handed over under the new
/// epoch only when the file is not there yet). Recovery takes the highest epoch: an abandoned
/// owner's files can never outrank the timeline that replaced it.
/// </summary>
public sealed partial class FleetMember
{
    private void WriteCheckpoint(string guest, long epoch, byte[] file, bool replace, ulong icount = 0, DiskSnapshot? disk = null, bool readOnly = false)
    {
        string dir = Path.Combine(_options.CheckpointDir!, guest);
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, $"{epoch.ToString(CultureInfo.InvariantCulture)}.ckpt");
        if (!replace && File.Exists(path)) return; // the new owner wrote a later state already
        // The disk first: a checkpoint on disk always has its disk image beside it (FleetDiskSnapshot).
        if (disk != null) FleetDiskSnapshot.Write(dir, epoch, icount, disk, readOnly);
        string tmp = $"{path}.{Environment.ProcessId}.tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write))
        {
            f.Write(file);
            f.Flush(flushToDisk: true);
        }
        try { File.Move(tmp, path, overwrite: replace); }
        catch (IOException) when (!replace) { File.Delete(tmp); return; } // the new owner wrote a later state already
        if (disk != null) FleetDiskSnapshot.RemoveOlder(dir, epoch, icount);
    }

    /// <summary>The checkpoint of the highest epoch for <paramref name="guest"/> in <paramref name="dir"/>, or null.</summary>
    public static string? LatestCheckpoint(string dir, string guest)
    {
        string d = Path.Combine(dir, guest);
        if (!Directory.Exists(d)) return null;
        return Directory.GetFiles(d, "*.ckpt")
            .Select(p => (Path: p, Epoch: long.TryParse(Path.GetFileNameWithoutExtension(p), NumberStyles.None, CultureInfo.InvariantCulture, out long e) ? e : -1))
            .Where(x => x.Epoch >= 0).OrderByDescending(x => x.Epoch).Select(x => x.Path).FirstOrDefault();
    }

    /// <summary>Pauses each running guest briefly to checkpoint it under its current epoch.</summary>
    private void CheckpointAll()
    {
        foreach (var e in _host.Entries())
        {
            if (e.Instance is not { State: GuestStatus.Running } g || e.Outgoing != null) continue;
            long epoch;
            lock (_epochs) if (!_epochs.TryGetValue(e.Name, out epoch)) continue;
            byte[] file = [];
            MachineSnapshot? snapshot = null;
            long paused = System.Diagnostics.Stopwatch.GetTimestamp();
            g.Pause();
            try
            {
                lock (_host.Lock) if (e.Outgoing != null || e.Instance != g) continue;
                // A guest with a drive: a copy-on-write snapshot of RAM and disk in the pause, written after it (a consistent pair).
                if (g.Machine.Disk != null) snapshot = g.Machine.TakeSnapshot();
                else file = CheckpointFile.Create(g.Machine);
            }
            finally { g.Resume(); }
            var pause = System.Diagnostics.Stopwatch.GetElapsedTime(paused);
            if (snapshot == null) { WriteCheckpoint(e.Name, epoch, file, replace: true); continue; }
            using (snapshot)
            {
                long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
                try
                {
                    file = CheckpointFile.Create(snapshot, g.Machine.Config);
                    WriteCheckpoint(e.Name, epoch, file, replace: true, snapshot.Icount, snapshot.Disk, g.Machine.Disk!.ReadOnly);
                }
                catch (ObjectDisposedException) { continue; } // stopped meanwhile: nothing to keep
                if (_pairsLogged.Add((e.Name, epoch)))
                    Log($"checkpoint pair of '{e.Name}' (epoch {epoch}): paused {pause.TotalMilliseconds:F2} ms, RAM and disk written in {System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds:F0} ms after");
            }
        }
    }

    private readonly HashSet<(string, long)> _refusedRecoveries = []; // a refusal is said once, not every reconcile round
    private readonly HashSet<(string, long)> _pairsLogged = []; // the first pair of each epoch says what it cost

    /// <summary>Starts the guests that `lm recover` gave to this host (their record names it and asks for a recovery).</summary>
    private void StartRecoveries()
    {
        var records = GuestRecord.All(_keys, _etcd.GetPrefix(_keys.Guests).Kvs);
        DropSupersededHolds(records);
        foreach (var rec in records)
        {
            if (rec.Owner != Address || !rec.Info.Recover) continue;
            if (_host.FindInstance(rec.Name) != null) continue;
            string? path = _options.CheckpointDir == null ? null : LatestCheckpoint(_options.CheckpointDir, rec.Name);
            if (path == null) { Log($"cannot recover '{rec.Name}': no checkpoint in {_options.CheckpointDir ?? "(no --checkpoints directory)"}"); continue; }
            byte[] checkpoint;
            string? diskSnapshot;
            bool readOnly;
            ConfinedPath? drive = null;
            try
            {
                (checkpoint, diskSnapshot, readOnly) = FleetDiskSnapshot.Pair(path, rec.Name);
                // Its disk goes into this host's disk directory (only there: DiskPaths).
                // NAME.EPOCH.img: the epoch is this recovery's own, so no other image of the directory is ever replaced.
                if (diskSnapshot != null) drive = DiskPaths.Confine(DiskPaths.Root(_host.Options), $"{rec.Name}.{Num(rec.Epoch)}.img", "recovered disk");
            }
            catch (Exception x) when (x is InvalidDataException or IOException or TraceFormatException or MigrationFailedException)
            {
                if (!_refusedRecoveries.Add((rec.Name, rec.Epoch))) continue;
                Log($"cannot recover '{rec.Name}': {x.Message}");
                continue;
            }
            // Clear the request first, guarded by the epoch: a second host can never start it too.
            var done = _etcd.Txn(new TxnRequest
            {
                Compare = { Txn.ValueIs(_keys.Owner(rec.Name), Address), Txn.ValueIs(_keys.Epoch(rec.Name), Num(rec.Epoch)) },
                Success = { Txn.Put(_keys.Info(rec.Name), FleetJson.Write(rec.Info with { Recover = false, Checkpoint = path })) },
            });
            if (!done.Succeeded) { drive?.Dispose(); continue; }
            lock (_epochs) _epochs[rec.Name] = rec.Epoch;
            // A copy held here since a committed move whose destination died: its state is in the checkpoints (HandedOver).
            if (_host.Entries().FirstOrDefault(e => e.Name == rec.Name)?.Held is { } held)
            {
                held.DiscardHeldCopy();
                Log($"'{rec.Name}': the copy held here since its move gives way to the recovery from the newest checkpoint");
            }
            try
            {
                if (drive == null) _host.StartFromCheckpoint(rec.Name, rec.Info.Image, checkpoint);
                else
                {
                    using (drive)
                    {
                        var disk = FleetDiskSnapshot.Place(diskSnapshot!, drive, readOnly);
                        _host.StartFromCheckpoint(rec.Name, rec.Info.Image, checkpoint, disk, drive.Path);
                    }
                }
            }
            catch (Exception x) when (x is InvalidDataException or IOException or TraceFormatException or MigrationFailedException)
            {
                Log($"'{rec.Name}' not recovered: {x.Message}");
                continue;
            }
            Log($"recovered '{rec.Name}' at epoch {rec.Epoch} from {path}{(diskSnapshot != null ? $" and its disk snapshot {diskSnapshot}" : "")}");
        }
    }

    /// <summary>
    /// A copy held after a committed move waits for its destination's word; once the record names
    /// neither that destination nor this host (recovered elsewhere, or gone), nothing can want it.
    /// </summary>
    private void DropSupersededHolds(List<GuestRecord> records)
    {
        var byName = records.ToDictionary(r => r.Name);
        foreach (var e in _host.Entries())
        {
            if (e.Held is not { } held) continue;
            var rec = byName.GetValueOrDefault(e.Name);
            if (rec != null && (rec.Owner == e.MovedTo || rec.Owner == Address)) continue;
            try { held.DiscardHeldCopy(); }
            catch (HostException) { continue; } // a resume in progress settles it
            Log($"'{e.Name}': the copy held here is dropped: the record names {rec?.Owner ?? "nobody"} (epoch {rec?.Epoch})");
        }
    }
}
