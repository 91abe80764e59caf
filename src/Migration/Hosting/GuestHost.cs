using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Hosting;

/// <summary>A guest name on a host: running here, arriving, or moved away (a forwarding record).</summary>
internal sealed class GuestEntry(string name)
{
    public string Name { get; } = name;
    public GuestInstance? Instance;
    public string? MovedTo;
    public MigrationSource? Outgoing;
    public MigrationDestination? Arriving;
    /// <summary>Source side of an interrupted post-copy: the paused copy whose pages the destination still lacks.</summary>
    public MigrationSource? PostcopyHeld;
    /// <summary>Destination side: the guest runs here while its post-copy pages are still arriving.</summary>
    public MigrationDestination? PostcopyIncoming;

    /// <summary>Why the name cannot be taken by a new or arriving guest, or null.</summary>
    public string? Busy() =>
        Instance != null ? "runs" : Arriving != null ? "is arriving" : PostcopyHeld != null ? "has post-copy pages held here for a resume" : null;
}

/// <summary>What a source decided for a migration; a destination that lost GO asks for it.</summary>
internal sealed record Outcome(string Decision, byte[] ConsoleInput, byte[] ConsoleBacklog);

/// <summary>
/// `lm host`: runs guests, each on its own thread, and serves the framed protocol on one listener:
/// control connections (start, status, stop, migrate, cancel, resolve, GO queries) and incoming
/// migrations. No static state: several hosts live side by side in one process (tests, `lm demo`).
/// </summary>
public sealed class GuestHost : IDisposable
{
    private readonly TcpListener _listener;
    private readonly Dictionary<string, GuestEntry> _guests = [];
    private readonly ConcurrentDictionary<string, Outcome> _outcomes = new();
    private readonly CancellationTokenSource _shutdown = new();
    private readonly List<Connection> _connections = [];
    internal readonly object Lock = new();

    public GuestHost(HostOptions options)
    {
        Options = options;
        var (host, port) = Transport.Address.Parse(options.Listen);
        BindAddress = Transport.Address.Resolve(host);
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
        Warm();
        Ownership = options.Ownership?.Invoke(this) ?? new PairwiseOwnership(); // FLEET: the owner record's keeper (etcd) or pairwise
        new Thread(AcceptLoop) { IsBackground = true, Name = $"host-{bound}" }.Start();
    }

    public HostOptions Options { get; }
    public IOwnership Ownership { get; }
    public IPAddress BindAddress { get; }
    /// <summary>HOST:PORT where this host can be reached.</summary>
    public string Address { get; }
    internal CancellationToken ShuttingDown => _shutdown.Token;

    internal void Log(string message)
    {
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
        var packed = Guest.Native.Zstd.Compress(raw, PageSender.CompressionLevel);
        Guest.Native.Zstd.Decompress(packed, raw);
        Guest.Native.XxHash3.Hash(raw);
        var batch = new PageBatch { Zstd = Google.Protobuf.ByteString.CopyFrom(packed) };
        batch.Pages.Add(0);
        Envelope.Parser.ParseFrom(new Envelope { Pages = batch }.ToByteArray());
    }

    private void AcceptLoop()
    {
        while (!_shutdown.IsCancellationRequested)
        {
            Socket socket;
            try { socket = _listener.AcceptSocket(); }
            catch (SocketException) { return; }
            catch (ObjectDisposedException) { return; }
            new Thread(() => Serve(socket)) { IsBackground = true, Name = "host-conn" }.Start();
        }
    }

    private void Serve(Socket socket)
    {
        using var conn = new Connection(socket);
        lock (_connections) _connections.Add(conn);
        try
        {
            var purpose = conn.ServerHandshake();
            if (purpose == Purpose.Migrate) new MigrationDestination(this, conn).Run();
            else ControlLoop(conn);
        }
        catch (ProtocolException e) { Log($"connection from {conn.Remote}: {e.Message}"); }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException) { }
        catch (Exception e)
        {
            // One connection's bug must not take the host and its guests down: log it loudly.
            Log($"internal error serving {conn.Remote}: {e}");
        }
        finally { lock (_connections) _connections.Remove(conn); }
    }

    // ---- Control ----

    private void ControlLoop(Connection conn)
    {
        while (true)
        {
            Envelope request;
            try { request = conn.Receive(); }
            catch (EndOfStreamException) { return; }
            Envelope reply;
            try
            {
                reply = request.BodyCase switch
                {
                    Envelope.BodyOneofCase.StartGuest => Ok(StartGuest(request.StartGuest)),
                    Envelope.BodyOneofCase.StatusRequest => new Envelope { StatusReply = Status(request.StatusRequest.Name) },
                    Envelope.BodyOneofCase.StopGuest => Ok(StopGuest(request.StopGuest.Name)),
                    Envelope.BodyOneofCase.MigrateCommand => new Envelope { Report = Migrate(request.MigrateCommand, p => conn.Send(new Envelope { Progress = p })) },
                    Envelope.BodyOneofCase.Cancel => Ok(Cancel(request.Cancel.Name)),
                    Envelope.BodyOneofCase.Resolve => Ok(Resolve(request.Resolve.Name, request.Resolve.Decision)),
                    Envelope.BodyOneofCase.GoQuery => new Envelope { GoAnswer = AnswerGoQuery(request.GoQuery.MigrationId) },
                    _ => throw new HostException($"unexpected control message {request.BodyCase}"),
                };
            }
            catch (Exception e) when (e is HostException or ElfLoadException or FormatException or InvalidDataException)
            {
                reply = new Envelope { Result = new Result { Ok = false, Error = e.Message } };
            }
            conn.Send(reply);
        }
    }

    private static Envelope Ok(string message) => new() { Result = new Result { Ok = true, Message = message } };

    /// <summary>Loads an ELF into a new machine and starts it.</summary>
    public string StartGuest(StartGuest request)
    {
        string name = request.Name;
        if (string.IsNullOrWhiteSpace(name)) throw new HostException("a guest needs a name");
        ulong mem = request.MemorySize == 0 ? MachineConfig.DefaultMemorySize : request.MemorySize;
        if (mem > Options.MaxMemorySize || mem % 4096 != 0) throw new HostException($"memory size {mem} is not supported here");
        if (Ownership.RefuseNewGuests() is { } refused) throw new HostException(refused);
        lock (Lock)
        {
            if (_guests.TryGetValue(name, out var existing) && existing.Busy() is { } busy)
                throw new HostException($"a guest named '{name}' already {busy} on this host");
        }
        var console = new ConsoleEndpoint(BindAddress);
        var port = NewPort(console);
        var machine = new Machine(new MachineConfig { MemorySize = mem, CompileBlocks = Options.CompileBlocks }, port);
        try { ElfLoader.Load(machine, request.Elf.Span); }
        catch { machine.Dispose(); console.Dispose(); throw; }
        return Launch(name, request.ImageName, machine, port, $"started '{name}' ({request.ImageName}, {mem >> 20} MiB)");
    }

    /// <summary>A port for a guest of this host: bound to the host's run permit (fencing).</summary>
    internal GuestHostPort NewPort(ConsoleEndpoint console, ulong timeBase = 0) => new(console, timeBase) { Permit = Ownership.Permit };

    /// <summary>Restarts a guest from a checkpoint (a fleet's `lm recover`: its record already names this host).</summary>
    public string StartFromCheckpoint(string name, string imageName, byte[] checkpoint)
    {
        var console = new ConsoleEndpoint(BindAddress);
        var port = NewPort(console);
        Machine machine;
        try { machine = Trace.CheckpointFile.Load(checkpoint, port); }
        catch { console.Dispose(); throw; }
        port.Rebase(machine.Clint.Time);
        return Launch(name, imageName, machine, port, $"recovered '{name}' from its checkpoint at icount {machine.Icount}", claim: false);
    }

    private string Launch(string name, string imageName, Machine machine, GuestHostPort port, string what, bool claim = true)
    {
        var console = port.Console;
        var instance = new GuestInstance(name, imageName, machine, port);
        try { if (claim) Ownership.Claim(name, machine.Config.MemorySize, imageName); }
        catch { instance.Dispose(); throw; }
        lock (Lock)
        {
            if (_guests.TryGetValue(name, out var existing) && existing.Busy() is { } busy)
            {
                instance.Dispose();
                throw new HostException($"a guest named '{name}' already {busy} on this host");
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
        var reply = new StatusReply();
        lock (Lock)
        {
            foreach (var e in _guests.Values.OrderBy(e => e.Name, StringComparer.Ordinal))
            {
                if (!string.IsNullOrEmpty(name) && e.Name != name) continue;
                var info = new GuestInfo { Name = e.Name };
                if (e.Instance is { } g)
                {
                    info.State = e.Outgoing != null ? "migrating-out" : g.State;
                    info.Icount = g.Machine.Icount;
                    info.MemorySize = g.Machine.Config.MemorySize;
                    info.Console = ConsoleAddress(g.Console);
                    info.ImageName = g.ImageName;
                    if (g.Machine.ExitCode is int code) { info.ExitCode = code; info.HasExitCode = true; }
                    if (e.Outgoing != null) info.Migration = e.Outgoing.Phase;
                    else if (e.PostcopyIncoming is { } pc) info.Migration = pc.PostcopyStatus;
                }
                else if (e.Arriving != null)
                {
                    info.State = e.Arriving.State;
                    info.MemorySize = e.Arriving.MemorySize;
                    info.Migration = e.Arriving.State;
                }
                else if (e.MovedTo != null)
                {
                    info.State = "moved";
                    info.MovedTo = e.MovedTo;
                    if (e.PostcopyHeld is { } held)
                        info.Migration = $"{held.Phase}: the pages the destination lacks are held here; `lm migrate {e.Name} --from {Address} --resume` recovers it";
                }
                reply.Guests.Add(info);
            }
        }
        if (!string.IsNullOrEmpty(name) && reply.Guests.Count == 0) throw new HostException($"no guest named '{name}' on this host");
        return reply;
    }

    public string StopGuest(string name)
    {
        GuestInstance instance;
        MigrationSource? held = null;
        lock (Lock)
        {
            if (_guests.TryGetValue(name, out var h) && h.Instance == null && h.PostcopyHeld != null) held = h.PostcopyHeld;
        }
        if (held != null)
        {
            held.DiscardHeldCopy();
            lock (Lock) if (_guests.TryGetValue(name, out var h)) h.PostcopyHeld = null;
            return $"discarded the post-copy pages of '{name}' held here; its destination can no longer fetch the pages it lacks";
        }
        lock (Lock)
        {
            if (!_guests.TryGetValue(name, out var e) || e.Instance == null) throw new HostException($"no guest named '{name}' runs on this host");
            if (e.Outgoing != null) throw new HostException($"'{name}' is migrating; cancel the migration first");
            if (e.PostcopyIncoming != null) throw new HostException($"'{name}' is still receiving its post-copy pages");
            instance = e.Instance;
            _guests.Remove(name);
        }
        ulong icount = instance.Machine.Icount;
        instance.Dispose();
        Ownership.Forget(name, Address);
        Log($"stopped '{name}' at icount {icount}");
        return $"stopped '{name}' at icount {icount}";
    }

    public MigrationReport Migrate(MigrateCommand command, Action<MigrationProgress>? progress = null)
    {
        if (command.Resume) return ResumePostcopy(command, progress);
        MigrationSource source;
        lock (Lock)
        {
            if (!_guests.TryGetValue(command.Name, out var e) || e.Instance == null)
                throw new HostException(e?.MovedTo != null ? $"'{command.Name}' has moved to {e.MovedTo}" : $"no guest named '{command.Name}' runs on this host");
            if (e.Outgoing != null) throw new HostException($"'{command.Name}' is already migrating");
            if (e.PostcopyIncoming != null) throw new HostException($"'{command.Name}' is still receiving its post-copy pages; migrate it when they are all here");
            if (e.Instance.State is "exited" or "crashed" or "idle") throw new HostException($"'{command.Name}' has {e.Instance.State}; only a live guest migrates");
            source = new MigrationSource(this, e, command);
            e.Outgoing = source;
        }
        try { return source.Run(progress); }
        finally { lock (Lock) e_ClearOutgoing(command.Name, source); }
    }

    private MigrationReport ResumePostcopy(MigrateCommand command, Action<MigrationProgress>? progress)
    {
        MigrationSource? held;
        lock (Lock) held = _guests.TryGetValue(command.Name, out var e) ? e.PostcopyHeld : null;
        if (held == null) throw new HostException($"no interrupted post-copy migration of '{command.Name}' is held on this host (nothing to resume)");
        return held.ResumePostcopy(command, progress);
    }

    internal void HoldForPostcopyResume(GuestEntry entry, MigrationSource source)
    {
        lock (Lock) entry.PostcopyHeld = source;
    }

    internal void ReleasePostcopyHold(GuestEntry entry, MigrationSource source)
    {
        lock (Lock) if (entry.PostcopyHeld == source) entry.PostcopyHeld = null;
    }

    private void e_ClearOutgoing(string name, MigrationSource source)
    {
        if (_guests.TryGetValue(name, out var e) && e.Outgoing == source) e.Outgoing = null;
    }

    public string Cancel(string name)
    {
        MigrationSource? source;
        lock (Lock) source = _guests.TryGetValue(name, out var e) ? e.Outgoing : null;
        if (source == null) throw new HostException($"no migration of '{name}' is in progress on this host");
        if (!source.Cancel()) throw new HostException($"too late: the migration of '{name}' has committed (GO)");
        return $"cancelled the migration of '{name}'; it keeps running here";
    }

    public string Resolve(string name, string decision)
    {
        MigrationDestination? arriving;
        lock (Lock) arriving = _guests.TryGetValue(name, out var e) ? e.Arriving : null;
        if (arriving == null) throw new HostException($"no migration of '{name}' awaits GO on this host");
        if (Ownership.Coordinated) throw new HostException($"this host is in a fleet: the record of '{name}' decides its migration (no resolve needed); `lm recover` restarts a guest whose host is gone");
        return arriving.Resolve(decision);
    }

    internal GoAnswer AnswerGoQuery(string migrationId)
    {
        if (_outcomes.TryGetValue(migrationId, out var o))
            return new GoAnswer { Decision = o.Decision, ConsoleInput = Google.Protobuf.ByteString.CopyFrom(o.ConsoleInput), ConsoleBacklog = Google.Protobuf.ByteString.CopyFrom(o.ConsoleBacklog) };
        lock (Lock)
        {
            foreach (var e in _guests.Values)
                if (e.Outgoing?.Id == migrationId) return new GoAnswer { Decision = "pending" };
        }
        return new GoAnswer { Decision = "unknown" };
    }

    /// <summary>A restarted source still answers a destination's GoQuery from its journal (console bytes are not journaled).</summary>
    private void LoadOutcomes(string path)
    {
        if (!File.Exists(path)) return;
        foreach (var line in File.ReadLines(path))
        {
            var parts = line.Split(' ');
            if (parts.Length == 2 && parts[1] is "go" or "abort") _outcomes[parts[0]] = new Outcome(parts[1], [], []);
        }
    }

    internal void RecordOutcome(string migrationId, Outcome outcome)
    {
        _outcomes[migrationId] = outcome;
        if (Options.DataDir != null)
        {
            try { File.AppendAllText(Path.Combine(Options.DataDir, "outcomes.log"), $"{migrationId} {outcome.Decision}\n"); }
            catch (IOException) { }
        }
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
            try { e.PostcopyHeld?.DiscardHeldCopy(); } catch (HostException) { }
        }
        lock (_connections) foreach (var c in _connections.ToArray()) c.Abort();
    }
}

/// <summary>A request the host refuses; the message goes back to the client as is.</summary>
public sealed class HostException(string message) : Exception(message);
