using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using LiveMigration.Guest;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Platform;
using LiveMigration.Guest.Loader;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Reports;
using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Transport.Tls;

namespace LiveMigration.Migration.Hosting;

/// <summary>A guest name on a host: running here, arriving, or moved away (a forwarding record).</summary>
internal sealed class GuestEntry(string name)
{
    public string Name { get; } = name;
    public GuestInstance? Instance;
    public string? MovedTo;
    public MigrationSource? Outgoing;
    public MigrationDestination? Arriving;
    /// <summary>Destination side: the migration this guest arrived by (what an <see cref="ArrivalQuery"/> names).</summary>
    public string? ArrivedBy;
    /// <summary>
    /// Source side, after commit: the paused copy, held until the destination confirms it runs the
    /// guest (with every post-copy page), or an operator decides.
    /// </summary>
    public MigrationSource? Held;
    /// <summary>Destination side: the guest runs here while its post-copy pages are still arriving.</summary>
    public MigrationDestination? PostcopyIncoming;

    /// <summary>Why the name cannot be taken by a new or arriving guest, or null.</summary>
    public string? Busy() =>
        Instance != null ? "runs" : Arriving != null ? "is arriving" : Held != null ? "has a paused copy held here until its migration settles" : null;
}

/// <summary>What a source decided for a migration; a destination that lost GO asks for it.</summary>
internal sealed record Outcome(Decision Decision, byte[] ConsoleInput, byte[] ConsoleBacklog, string? Destination = null);

/// <summary>
/// `lm host`: runs guests, each on its own thread, and serves the framed protocol on one listener:
/// control connections (start, status, stop, migrate, cancel, resolve, GO queries) and incoming
/// migrations. No static state: several hosts live side by side in one process (tests, `lm demo`).
/// </summary>
public sealed partial class GuestHost : IDisposable
{
    private readonly TcpListener _listener;
    private readonly Dictionary<string, GuestEntry> _guests = [];
    private readonly ConcurrentDictionary<string, Outcome> _outcomes = new();
    private readonly CancellationTokenSource _shutdown = new();
    private readonly List<Connection> _connections = [];
    private readonly ConcurrentDictionary<string, PeerIdentity> _owners = new();
    private readonly ConcurrentDictionary<(string Source, string Name), long> _confirmedSources = new();
    private const long SourceConfirmationLifetimeMs = 10 * 60 * 1000;
    private int _open; // connections being served (accepted, not yet closed)
    internal readonly object Lock = new();

    public GuestHost(HostOptions options)
    {
        Options = options;
        var (host, port) = Transport.Address.Parse(options.Listen);
        BindAddress = Transport.Address.Resolve(host);
        if (options.Tls == null && !IPAddress.IsLoopback(BindAddress))
            throw new HostException($"listening on {options.Listen} requires TLS (--tls DIR); without it a host listens on loopback only");
        _listener = new TcpListener(BindAddress, port);
        _listener.Start();
        int bound = ((IPEndPoint)_listener.LocalEndpoint).Port;
        string advertised = BindAddress.Equals(IPAddress.Any) ? "127.0.0.1" : BindAddress.ToString();
        this.Address = $"{advertised}:{bound}";
        if (options.DataDir != null)
        {
            Directory.CreateDirectory(options.DataDir);
            LoadOutcomes(Path.Combine(options.DataDir, "outcomes.log"));
        }
        Reports = new ReportStore(options.DataDir, m => Log(m));
        Warm();
        Log(options.Tls is { } tls
            ? $"mutual TLS 1.3 on every connection as host '{tls.Name}'; trusting only the CA in {tls.Directory}"
            : "no TLS: listening on loopback only, where every local process may drive this host (use --tls DIR for anything else)");
        Ownership = options.Ownership?.Invoke(this) ?? new PairwiseOwnership(); // FLEET: the owner record's keeper (etcd) or pairwise
        _ = AcceptLoopAsync();
    }

    public HostOptions Options { get; }
    public IOwnership Ownership { get; }
    public IPAddress BindAddress { get; }
    /// <summary>HOST:PORT where this host can be reached.</summary>
    public string Address { get; }
    internal CancellationToken ShuttingDown => _shutdown.Token;

    /// <summary>Every report of a migration this host ran as the source (kept in the data directory when there is one).</summary>
    public ReportStore Reports { get; }

    /// <summary>Progress of any migration this host runs as the source, whoever asked for it: (migration id, the command, progress), every ~200 ms.</summary>
    public event Action<string, MigrateCommand, MigrationProgress>? MigrationProgressed;

    /// <summary>A migration (or post-copy resume) this host ran as the source ended; its report is complete and stored.</summary>
    public event Action<MigrationReport>? MigrationFinished;

    internal void Log(string message)
    {
        message = message.ReplaceLineEndings("\\n"); // one event, one line, whatever a peer put in it
        Options.Log?.Invoke($"[{Address}] {message}");
        if (Options.DataDir != null)
        {
            try { File.AppendAllText(Path.Combine(Options.DataDir, "host.log"), $"{DateTime.UtcNow:O} {message}\n"); }
            catch (IOException) { }
        }
    }

    /// <summary>Loads the native codecs and JITs the page path now, not during a guest's downtime.</summary>
    private static void Warm()
    {
        var raw = new byte[Guest.Memory.GuestMemory.PageSize * 2];
        var packed = Trace.Compression.Zstd.Compress(raw, PageSender.CompressionLevel);
        Trace.Compression.Zstd.Decompress(packed, raw);
        System.IO.Hashing.XxHash3.HashToUInt64(raw);
        var batch = new PageBatch { Zstd = Google.Protobuf.ByteString.CopyFrom(packed) };
        batch.Pages.Add(0);
        Envelope.Parser.ParseFrom(new Envelope { Pages = batch }.ToByteArray());
    }

    /// <summary>An outgoing connection to another host (a migration, a GO query), in TLS when this host has it.</summary>
    internal Connection Connect(string address, TimeSpan? timeout = null, PeerIdentity? expect = null)
    {
        var conn = Connection.Connect(address, timeout, Options.Tls);
        if (expect is { Authenticated: true } && conn.Peer.Name != expect.Name)
        {
            conn.Dispose();
            throw new Transport.Tls.TlsRefusedException($"{address} is {conn.Peer}, not {expect}");
        }
        return conn;
    }

    /// <summary>A console for a guest of this host: TLS and the Console role when this host has TLS.</summary>
    internal ConsoleEndpoint CreateConsole() => new(BindAddress, Options.Tls, Options.HandshakeTimeout, Log);

    private static Envelope Ok(string message) => new() { Result = new Result { Ok = true, Message = message } };

    /// <summary>Loads an ELF into a new machine and starts it.</summary>
    public string StartGuest(StartGuest request)
    {
        string name = Names.Check(request.Name);
        if (request.ImageName.Length > 256 || request.ImageName.Any(char.IsControl)) throw new HostException("an image name must be printable and at most 256 characters");
        ulong mem = request.MemorySize;
        if (mem == 0) throw new HostException("memory size 0: a guest needs RAM (e.g. --mem 128M)");
        if (mem > Options.MaxMemorySize || mem % 4096 != 0) throw new HostException($"memory size {mem} is not supported here (4 KiB multiples up to {Options.MaxMemorySize >> 20} MiB)");
        if (Ownership.RefuseNewGuests() is { } refused) throw new HostException(refused);
        lock (Lock)
        {
            if (_guests.TryGetValue(name, out var existing) && existing.Busy() is { } busy)
                throw new HostException($"a guest named '{name}' already {busy} on this host");
            if (CapacityProblem(mem, incoming: false) is { } full) throw new HostException(full);
        }
        var console = CreateConsole();
        var port = NewPort(console);
        var kernel = request.Kernel;
        var drive = request.DrivePath.Length == 0 ? null : new Recorder.Disk.DriveSpec(Path.GetFullPath(request.DrivePath), request.DriveReadOnly);
        var boot = kernel == null ? null : new BootImages
        {
            Firmware = kernel.Firmware.ToByteArray(), Kernel = kernel.Kernel.ToByteArray(),
            Initrd = kernel.Initrd.IsEmpty ? null : kernel.Initrd.ToByteArray(), CommandLine = kernel.CommandLine.Length == 0 ? null : kernel.CommandLine,
            Balloon = !kernel.NoBalloon,
        };
        var config = new MachineConfig
        {
            MemorySize = mem,
            Virtio = (boot?.Devices ?? VirtioDevices.None) | (drive == null ? VirtioDevices.None : VirtioDevices.Block),
        };
        Guest.Devices.Virtio.Block.Disk? disk;
        try { disk = drive?.Open(); }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException) { console.Dispose(); throw new HostException(e.Message); }
        var machine = new Machine(config, port, Options.CompileBlocks);
        try
        {
            if (disk != null) machine.InsertDisk(disk);
            if (boot == null) ElfLoader.Load(machine, request.Elf.Span);
            else LinuxBoot.Load(machine, boot);
        }
        catch { machine.Dispose(); disk?.Dispose(); console.Dispose(); throw; }
        return Launch(name, request.ImageName, machine, port, $"started '{name}' ({request.ImageName}, {mem >> 20} MiB{(drive != null ? $", drive {drive.Path}{(drive.ReadOnly ? " read-only" : "")}" : "")})", drivePath: drive?.Path);
    }

    /// <summary>A port for a guest of this host: bound to the host's run permit (fencing).</summary>
    internal GuestHostPort NewPort(ConsoleEndpoint console, ulong timeBase = 0) => new(console, timeBase) { Permit = Ownership.Permit };

    /// <summary>Restarts a guest from a checkpoint (a fleet's `lm recover`: its record already names this host).</summary>
    public string StartFromCheckpoint(string name, string imageName, byte[] checkpoint) => StartFromCheckpoint(name, imageName, checkpoint, null, null);

    /// <summary>
    /// As <see cref="StartFromCheckpoint(string, string, byte[])"/> for a machine with a drive:
    /// <paramref name="disk"/> holds the disk as it was at the checkpoint (its digest is checked
    /// against the checkpoint's, the checkpoint's overlay is not applied); the guest owns it from here.
    /// </summary>
    public string StartFromCheckpoint(string name, string imageName, byte[] checkpoint, Guest.Devices.Virtio.Block.Disk? disk, string? drivePath)
    {
        var console = CreateConsole();
        var port = NewPort(console);
        Machine machine;
        try { machine = disk == null ? Trace.CheckpointFile.Load(checkpoint, port) : Trace.CheckpointFile.Load(checkpoint, port, disk, diskAtSavedContents: true); }
        catch { console.Dispose(); disk?.Dispose(); throw; }
        port.Rebase(machine.Clint.Time);
        return Launch(name, imageName, machine, port, $"recovered '{name}' from its checkpoint at icount {machine.Icount}{(drivePath != null ? $" with its disk at {drivePath}" : "")}", claim: false, drivePath: drivePath);
    }

    private string Launch(string name, string imageName, Machine machine, GuestHostPort port, string what, bool claim = true, string? drivePath = null)
    {
        var console = port.Console;
        var instance = new GuestInstance(name, imageName, machine, port) { DrivePath = drivePath };
        try { if (claim) Ownership.Claim(name, machine.Config.MemorySize, imageName); }
        catch { instance.Dispose(); throw; }
        lock (Lock)
        {
            string? refusal = _guests.TryGetValue(name, out var existing) && existing.Busy() is { } busy
                ? $"a guest named '{name}' already {busy} on this host" : CapacityProblem(machine.Config.MemorySize, incoming: false);
            if (refusal != null)
            {
                instance.Dispose();
                throw new HostException(refusal);
            }
            _guests[name] = new GuestEntry(name) { Instance = instance };
        }
        instance.Start();
        Log($"{what}, console {ConsoleAddress(console)}");
        return ConsoleAddress(console);
    }

    internal string ConsoleAddress(ConsoleEndpoint console) => $"{Address[..Address.LastIndexOf(':')]}:{console.EndPoint.Port}";

    public StatusReply Status(string? name = null)
    {
        if (!string.IsNullOrEmpty(name)) Names.Check(name);
        var reply = new StatusReply();
        lock (Lock)
        {
            foreach (var e in _guests.Values.OrderBy(e => e.Name, StringComparer.Ordinal))
            {
                if (!string.IsNullOrEmpty(name) && e.Name != name) continue;
                var info = new GuestInfo { Name = e.Name };
                if (e.Instance is { } g)
                {
                    info.Status = e.Outgoing != null ? GuestStatus.MigratingOut : g.State;
                    info.Icount = g.Machine.Icount;
                    info.MemorySize = g.Machine.Config.MemorySize;
                    info.Console = ConsoleAddress(g.Console);
                    info.ImageName = g.ImageName;
                    if (g.Machine.ExitCode is int code) { info.ExitCode = code; info.HasExitCode = true; }
                    if (e.Outgoing is { Unsettled: true }) info.Migration = UnsettledStatus(e.Name);
                    else if (e.Outgoing != null) info.Migration = Engine.Strategies.Name(e.Outgoing.Phase);
                    else if (e.PostcopyIncoming is { } pc) info.Migration = pc.PostcopyStatus;
                    if (e.PostcopyIncoming is { PostcopyFailure: not null })
                        info.Migration += $"; if its source is gone for good, `lm stop {e.Name} --host {Address}` discards it";
                }
                else if (e.Arriving != null)
                {
                    info.Status = GuestStatus.Arriving;
                    info.Arrival = e.Arriving.State;
                    info.MemorySize = e.Arriving.MemorySize;
                    info.Migration = DestinationStates.Name(e.Arriving.State);
                }
                else if (e.MovedTo != null)
                {
                    info.Status = GuestStatus.Moved;
                    info.MovedTo = e.MovedTo;
                    if (e.Held is { } held) info.Migration = held.HeldStatus;
                }
                info.State = GuestStatuses.Name(info.Status, info.Arrival);
                reply.Guests.Add(info);
            }
        }
        if (!string.IsNullOrEmpty(name) && reply.Guests.Count == 0) throw new HostException($"no guest named '{name}' on this host");
        return reply;
    }

    public string StopGuest(string name)
    {
        Names.Check(name);
        GuestInstance instance;
        MigrationSource? held = null;
        lock (Lock)
        {
            if (_guests.TryGetValue(name, out var h) && h.Instance == null && h.Held != null) held = h.Held;
        }
        if (held != null)
        {
            held.DiscardHeldCopy();
            return $"discarded the paused copy of '{name}' held here; its destination can no longer fetch pages from it";
        }
        MigrationSource? unsettled;
        lock (Lock) unsettled = _guests.TryGetValue(name, out var u) && u.Outgoing is { Unsettled: true } s ? s : null;
        if (unsettled != null)
        {
            if (!unsettled.DiscardUnsettled()) throw new HostException($"the rollback of '{name}' settled meanwhile; see `lm status {name}`");
            return $"discarded the copy of '{name}' paused here since its rolled-back migration (it never runs again on this host); once etcd answers its record is removed, unless the fleet had given it to another host";
        }
        MigrationDestination? incoming = null;
        lock (Lock)
        {
            if (!_guests.TryGetValue(name, out var e) || e.Instance == null) throw new HostException($"no guest named '{name}' runs on this host");
            if (e.Outgoing != null) throw new HostException($"'{name}' is migrating; cancel the migration first");
            incoming = e.PostcopyIncoming;
            e.PostcopyIncoming = null;
            instance = e.Instance;
            _guests.Remove(name);
        }
        // A post-copy guest whose pages may never come (its source died): the operator's exit. The link goes first.
        incoming?.AbandonPostcopy("stopped by the operator");
        ulong icount = instance.Machine.Icount;
        instance.Dispose();
        Ownership.Forget(name, Address);
        string lost = incoming != null ? $" (post-copy incomplete: {incoming.PostcopyAbsentPages} pages never arrived)" : "";
        Log($"stopped '{name}' at icount {icount}{lost}");
        return $"stopped '{name}' at icount {icount}{lost}";
    }

    public MigrationReport Migrate(MigrateCommand command, Action<MigrationProgress>? progress = null)
    {
        Names.Check(command.Name);
        if (!string.IsNullOrEmpty(command.Target) || !command.Resume) Transport.Address.Parse(command.Target);
        string? id = null;
        void Observe(MigrationProgress p)
        {
            MigrationProgressed?.Invoke(id ?? "", command, p);
            progress?.Invoke(p);
        }
        var report = command.Resume ? ResumePostcopy(command, Observe, source => id = source.Id) : StartOutgoing(command, Observe, source => id = source.Id);
        Reports.Add(report);
        MigrationFinished?.Invoke(report);
        return report;
    }

    private MigrationReport StartOutgoing(MigrateCommand command, Action<MigrationProgress> progress, Action<MigrationSource> started)
    {
        MigrationSource source;
        lock (Lock)
        {
            if (!_guests.TryGetValue(command.Name, out var e) || e.Instance == null)
                throw new HostException(e?.MovedTo != null ? $"'{command.Name}' has moved to {e.MovedTo}" : $"no guest named '{command.Name}' runs on this host");
            if (e.Outgoing != null) throw new HostException($"'{command.Name}' is already migrating");
            if (e.PostcopyIncoming != null) throw new HostException($"'{command.Name}' is still receiving its post-copy pages; migrate it when they are all here");
            if (e.Instance.State is GuestStatus.Exited or GuestStatus.Crashed or GuestStatus.Idle) throw new HostException($"'{command.Name}' has {GuestStatuses.Name(e.Instance.State)}; only a live guest migrates");
            source = new MigrationSource(this, e, command);
            e.Outgoing = source;
        }
        started(source);
        try { return source.Run(progress); }
        finally { lock (Lock) if (!source.Unsettled) e_ClearOutgoing(command.Name, source); }
    }

    private string UnsettledStatus(string name) =>
        $"rolled back, paused until etcd answers: it resumes here if its record still names {Address}; `lm recover {name} --to HOST` if this host never reaches etcd again; `lm stop {name}` discards it";

    /// <summary>An unsettled rollback has settled: the guest is no longer migrating.</summary>
    internal void EndOutgoing(GuestEntry entry, MigrationSource source)
    {
        lock (Lock) if (entry.Outgoing == source) entry.Outgoing = null;
    }

    private MigrationReport ResumePostcopy(MigrateCommand command, Action<MigrationProgress> progress, Action<MigrationSource> started)
    {
        MigrationSource? held;
        lock (Lock) held = _guests.TryGetValue(command.Name, out var e) ? e.Held : null;
        if (held == null || !held.IsPostcopy) throw new HostException($"no interrupted post-copy migration of '{command.Name}' is held on this host (nothing to resume)");
        started(held);
        return held.ResumePostcopy(command, progress);
    }

    internal void Hold(GuestEntry entry, MigrationSource source)
    {
        lock (Lock) entry.Held = source;
    }

    internal void ReleaseHold(GuestEntry entry, MigrationSource source)
    {
        lock (Lock) if (entry.Held == source) entry.Held = null;
    }

    /// <summary>A held copy runs here again (the operator's resolve): the entry stops forwarding.</summary>
    internal void Reinstate(GuestEntry entry, MigrationSource source, GuestInstance instance)
    {
        lock (Lock)
        {
            if (entry.Held == source) entry.Held = null;
            entry.Instance = instance;
            entry.MovedTo = null;
            if (!_guests.ContainsKey(entry.Name)) _guests[entry.Name] = entry;
        }
    }

    private void e_ClearOutgoing(string name, MigrationSource source)
    {
        if (_guests.TryGetValue(name, out var e) && e.Outgoing == source) e.Outgoing = null;
    }

    public string Cancel(string name)
    {
        Names.Check(name);
        MigrationSource? source;
        lock (Lock) source = _guests.TryGetValue(name, out var e) ? e.Outgoing : null;
        if (source == null) throw new HostException($"no migration of '{name}' is in progress on this host");
        if (source.Unsettled) throw new HostException($"the migration of '{name}' is over; {UnsettledStatus(name)}");
        if (!source.Cancel()) throw new HostException($"too late: the migration of '{name}' has committed (GO)");
        return $"cancelled the migration of '{name}'; it keeps running here";
    }

    /// <summary>`lm resolve`: a destination waiting for GO, or a source holding a paused copy after commit.</summary>
    public string Resolve(string name, Decision decision)
    {
        Names.Check(name);
        MigrationDestination? arriving;
        MigrationSource? held;
        lock (Lock)
        {
            _guests.TryGetValue(name, out var e);
            arriving = e?.Arriving;
            held = e?.Held;
        }
        if (held != null) return held.ResolveHeld(decision);
        if (arriving != null && Ownership.Coordinated) throw new HostException($"this host is in a fleet: the record of '{name}' decides its migration (no resolve needed); `lm recover` restarts a guest whose host is gone");
        if (arriving == null) throw new HostException($"no migration of '{name}' awaits GO or holds a paused copy on this host");
        return arriving.Resolve(decision);
    }

    /// <summary>What became of an incoming migration here (a source holding its paused copy asks).</summary>
    internal ArrivalAnswer AnswerArrivalQuery(ArrivalQuery query, PeerIdentity asker)
    {
        // Only the source that sent the guest learns what became of it.
        if (asker.Authenticated && OwnerOf(query.MigrationId) is { } owner && owner.Name != asker.Name)
            throw new HostException($"{asker} is not {owner}, the source of migration {query.MigrationId}");
        lock (Lock)
        {
            if (!_guests.TryGetValue(query.Name, out var e) || e.ArrivedBy != query.MigrationId)
                return new ArrivalAnswer { State = ArrivalState.ArrivalUnknown, Detail = $"no migration {query.MigrationId} of '{query.Name}' here" };
            if (e.Arriving is { } a)
                return new ArrivalAnswer { State = a.AwaitingGo ? ArrivalState.ArrivalAwaitingGo : ArrivalState.ArrivalReceiving, Detail = DestinationStates.Name(a.State) };
            if (e.PostcopyIncoming is { } pc) return new ArrivalAnswer { State = ArrivalState.ArrivalPostcopy, Detail = pc.PostcopyStatus };
            string console = e.Instance is { } g ? ConsoleAddress(g.Console) : "";
            return new ArrivalAnswer { State = ArrivalState.ArrivalResumed, Detail = console }; // ran here (and may have moved on since)
        }
    }

    internal GoAnswer AnswerGoQuery(string migrationId, PeerIdentity asker)
    {
        if (_outcomes.TryGetValue(migrationId, out var o))
        {
            // The answer carries the guest's console bytes: for its destination only.
            if (asker.Authenticated && o.Destination != null && o.Destination != asker.Name)
                throw new HostException($"{asker} is not lm-host '{o.Destination}', the destination of migration {migrationId}");
            return new GoAnswer { Decision = o.Decision, ConsoleInput = Google.Protobuf.ByteString.CopyFrom(o.ConsoleInput), ConsoleBacklog = Google.Protobuf.ByteString.CopyFrom(o.ConsoleBacklog) };
        }
        lock (Lock)
        {
            foreach (var e in _guests.Values)
                if (e.Outgoing?.Id == migrationId) return new GoAnswer { Decision = Decision.Pending };
        }
        return new GoAnswer { Decision = Decision.Unknown };
    }

    /// <summary>A restarted source still answers a destination's GoQuery from its journal (console bytes are not journaled).</summary>
    private void LoadOutcomes(string path)
    {
        if (!File.Exists(path)) return;
        foreach (var line in File.ReadLines(path))
        {
            var parts = line.Split(' ');
            if (parts.Length == 2 && Enum.TryParse<Decision>(parts[1], ignoreCase: true, out var d) && d is Decision.Go or Decision.Abort)
                _outcomes[parts[0]] = new Outcome(d, [], []); // the last line of a migration wins (an operator may reverse a go)
        }
    }

    internal void RecordOutcome(string migrationId, Outcome outcome)
    {
        _outcomes[migrationId] = outcome;
        if (Options.DataDir != null)
        {
            try { File.AppendAllText(Path.Combine(Options.DataDir, "outcomes.log"), $"{migrationId} {outcome.Decision.ToString().ToLowerInvariant()}\n"); }
            catch (IOException) { }
        }
    }

    // ---- Limits and ownership ----

    /// <summary>Why one more guest of <paramref name="memory"/> bytes cannot come (caller holds <see cref="Lock"/>), or null.</summary>
    internal string? CapacityProblem(ulong memory, bool incoming)
    {
        int guests = 0, arriving = 0;
        ulong total = 0;
        foreach (var e in _guests.Values)
        {
            if (e.Instance != null) { guests++; total += e.Instance.Machine.Config.MemorySize; }
            else if (e.Arriving != null) { guests++; arriving++; total += e.Arriving.MemorySize; }
        }
        if (guests >= Options.MaxGuests) return $"this host holds {guests} guests, its limit (--max-guests)";
        if (incoming && arriving >= Options.MaxIncomingMigrations) return $"{arriving} migrations are arriving already, this host's limit (--max-incoming)";
        ulong budget = Options.GuestMemoryBudget;
        if (total + memory > budget)
            return $"{memory >> 20} MiB more would bring guest RAM to {(total + memory) >> 20} MiB, over this host's budget of {budget >> 20} MiB ({Options.MaxMemoryFraction:0.##} of its memory, --max-memory-fraction)";
        return null;
    }

    /// <summary>
    /// Admits an incoming migration (caller holds <see cref="Lock"/>) and remembers which source owns
    /// it: only that host may resume its post-copy later. Null when admitted, else why not.
    /// </summary>
    internal string? AdmitIncoming(MigrateSetup setup, PeerIdentity source)
    {
        if (CapacityProblem(setup.MemorySize, incoming: true) is { } full) return full;
        _owners[setup.MigrationId] = source;
        return null;
    }

    /// <summary>
    /// Why <paramref name="peer"/> may not send a migration as the host at <paramref name="source"/>, or
    /// null. Hosts of one fleet may share an IP address (and so a SAN), so the proof is a call back:
    /// the host listening at <paramref name="source"/> must present a certificate of the peer's name.
    /// Without TLS (loopback only) every local process is trusted, as for every other request.
    /// </summary>
    internal string? SourceClaimProblem(PeerIdentity peer, string source)
    {
        if (!peer.Authenticated) return null;
        // A confirmed pair stays true while that host keeps its port: only a holder of the same name could take it over.
        long now = Environment.TickCount64;
        if (_confirmedSources.TryGetValue((source, peer.Name), out long at) && now - at < SourceConfirmationLifetimeMs) return null;
        try
        {
            using var back = Connect(source, TimeSpan.FromSeconds(5), expect: peer);
            back.ClientHandshake(Purpose.Control);
            _confirmedSources[(source, peer.Name)] = now;
            return null;
        }
        catch (TlsRefusedException e) { return $"{peer} claims to be the source {source}, but {e.Message}"; }
        catch (IOException e) { return $"cannot confirm that {peer} is the source {source} it names: {e.Message}"; }
    }

    internal PeerIdentity? OwnerOf(string migrationId) => _owners.GetValueOrDefault(migrationId);

    /// <summary>Pages of the guest running here under <paramref name="name"/> (0 when none).</summary>
    internal uint PageCountOf(string name)
    {
        lock (Lock) return _guests.TryGetValue(name, out var e) && e.Instance != null ? (uint)e.Instance.Machine.Memory.PageCount : 0;
    }

    internal ulong DiskBlocksOf(string name)
    {
        lock (Lock) return _guests.TryGetValue(name, out var e) && e.Instance?.Machine.Disk is { } d ? (ulong)d.BlockCount : 0;
    }

    // ---- Entries, for the migration engine ----

    internal GuestEntry? Entry(string name) => _guests.GetValueOrDefault(name);

    /// <summary>A copy of the entries (under <see cref="Lock"/>), for the fleet's host record and fencing.</summary>
    internal List<GuestEntry> Entries() { lock (Lock) return [.. _guests.Values]; }

    internal void SetEntry(GuestEntry entry) => _guests[entry.Name] = entry;

    internal void RemoveEntry(GuestEntry entry)
    {
        if (_guests.TryGetValue(entry.Name, out var e) && e == entry) _guests.Remove(entry.Name);
    }

    /// <summary>The instance running under <paramref name="name"/>, for in-process tests and the demo.</summary>
    public GuestInstance? FindInstance(string name)
    {
        lock (Lock) return _guests.TryGetValue(name, out var e) ? e.Instance : null;
    }

    public void Dispose()
    {
        _shutdown.Cancel();
        _listener.Stop();
        Ownership.Dispose(); // a fleet member deregisters (revokes its lease)
        List<GuestEntry> entries;
        lock (Lock) { entries = [.. _guests.Values]; _guests.Clear(); }
        foreach (var e in entries)
        {
            e.Outgoing?.Cancel();
            e.Arriving?.Discard("host shutting down");
            e.Instance?.Dispose();
            try { e.Held?.DiscardHeldCopy(); } catch (HostException) { }
        }
        lock (_connections) foreach (var c in _connections.ToArray()) c.Abort();
    }
}

/// <summary>A request the host refuses; the message goes back to the client as is.</summary>
public sealed class HostException(string message) : Exception(message);
