using Google.Protobuf;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Transport.Tls;

namespace LiveMigration.Migration.Hosting;

/// <summary>A control connection to a host: what `lm start/status/stop/migrate/cancel/resolve` use.</summary>
public sealed class HostClient : IDisposable
{
    private readonly Connection _conn;

    private HostClient(Connection conn) => _conn = conn;

    public string Address { get; private init; } = "";

    /// <summary>
    /// A host answers a request, or sends migration progress, well within this; silence this long
    /// means it is stopped (SIGSTOP), hung or cut off, and the call fails with a line saying so.
    /// </summary>
    public static readonly TimeSpan SilenceLimit = TimeSpan.FromSeconds(10);

    /// <summary>Connects and shakes hands; with <paramref name="tls"/> in mutual TLS as that identity (no plaintext fallback).</summary>
    public static HostClient Connect(string address, TlsIdentity? tls = null)
    {
        var conn = Connection.Connect(address, tls: tls);
        try
        {
            conn.ClientHandshake(Purpose.Control);
            conn.ReceiveTimeout = SilenceLimit;
        }
        catch (IOException e) when (e is not ProtocolException) { conn.Dispose(); throw new IOException($"the host {address} accepted the connection but does not answer ({e.Message})", e); }
        catch { conn.Dispose(); throw; }
        return new HostClient(conn) { Address = address, Tls = tls };
    }

    public TlsIdentity? Tls { get; private init; }

    private Envelope Call(Envelope request)
    {
        try { _conn.Send(request); }
        catch (IOException sendError) when (request.BodyCase == Envelope.BodyOneofCase.StartGuest)
        {
            // The host may have refused the request while it was still being written: its reason is what to show.
            _conn.ReceiveTimeout = TimeSpan.FromSeconds(2);
            try { return _conn.Receive(); }
            catch (IOException) { throw sendError; }
        }
        return _conn.Receive();
    }

    private static string Check(Envelope reply)
    {
        if (reply.BodyCase != Envelope.BodyOneofCase.Result) throw new ProtocolException($"unexpected reply {reply.BodyCase}");
        if (!reply.Result.Ok) throw new HostException(reply.Result.Error);
        return reply.Result.Message;
    }

    /// <summary>Starts a guest; returns its console address.</summary>
    /// <param name="drive">A raw image on the host for virtio-blk (its path there), or null.</param>
    public string Start(string name, byte[] elf, ulong memorySize = Guest.MachineConfig.DefaultMemorySize, string imageName = "", Recorder.Disk.DriveSpec? drive = null)
    {
        Names.Check(name);
        if (elf.Length > FrameLimits.MaxElf) throw new HostException($"the guest image is {elf.Length >> 20} MiB; a host accepts images up to {FrameLimits.MaxElf >> 20} MiB");
        return Check(Call(new Envelope
        {
            StartGuest = new StartGuest
            {
                Name = name, Elf = ByteString.CopyFrom(elf), MemorySize = memorySize, ImageName = imageName,
                DrivePath = drive?.Path ?? "", DriveReadOnly = drive?.ReadOnly ?? false,
            },
        }));
    }

    /// <summary>Boots a Linux kernel as a guest; returns its console address.</summary>
    public string Start(string name, Guest.Platform.BootImages boot, ulong memorySize, string imageName, Recorder.Disk.DriveSpec? drive = null)
    {
        Names.Check(name);
        long total = boot.Firmware.Length + boot.Kernel.Length + (boot.Initrd?.Length ?? 0L);
        if (total > FrameLimits.MaxElf) throw new HostException($"firmware, kernel and initrd are {total >> 20} MiB together; a host accepts up to {FrameLimits.MaxElf >> 20} MiB");
        var kernel = new KernelBoot
        {
            Firmware = ByteString.CopyFrom(boot.Firmware), Kernel = ByteString.CopyFrom(boot.Kernel),
            Initrd = boot.Initrd == null ? ByteString.Empty : ByteString.CopyFrom(boot.Initrd), CommandLine = boot.CommandLine ?? "",
            NoBalloon = !boot.Balloon,
        };
        return Check(Call(new Envelope
        {
            StartGuest = new StartGuest
            {
                Name = name, Kernel = kernel, MemorySize = memorySize, ImageName = imageName,
                DrivePath = drive?.Path ?? "", DriveReadOnly = drive?.ReadOnly ?? false,
            },
        }));
    }

    public StatusReply Status(string? name = null)
    {
        var reply = Call(new Envelope { StatusRequest = new StatusRequest { Name = name ?? "" } });
        if (reply.BodyCase == Envelope.BodyOneofCase.StatusReply) return reply.StatusReply;
        Check(reply);
        throw new ProtocolException("status answered with a bare result");
    }

    public string Stop(string name) => Check(Call(new Envelope { StopGuest = new StopGuest { Name = name } }));

    public string Cancel(string name) => Check(Call(new Envelope { Cancel = new CancelMigration { Name = name } }));

    /// <summary>`lm resolve`: decision "" (ask the other host), "go" or "abort".</summary>
    public string Resolve(string name, string decision = "") => Check(Call(new Envelope { Resolve = new Resolve { Name = name, Decision = ParseDecision(decision) } }));

    public static Decision ParseDecision(string decision) => decision switch
    {
        "" or "ask" => Decision.Pending,
        "go" => Decision.Go,
        "abort" => Decision.Abort,
        _ => throw new FormatException($"unknown decision '{decision}' (expected ask, go or abort)"),
    };

    /// <summary>Runs a migration on this (source) host; progress arrives every ~200 ms until the report.</summary>
    public MigrationReport Migrate(MigrateCommand command, Action<MigrationProgress>? progress = null)
    {
        _conn.Send(new Envelope { MigrateCommand = command });
        while (true)
        {
            Envelope e;
            try { e = _conn.Receive(); }
            catch (IOException x) when (x is not ProtocolException)
            {
                // Progress comes every 200 ms: this silence is a stopped or lost source, not a slow migration.
                throw new IOException($"lost the source host {Address} during the migration of '{command.Name}': {x.Message}; " +
                    $"its outcome is unknown here: `lm status {command.Name} --host {Address}` tells once it answers", x);
            }
            switch (e.BodyCase)
            {
                case Envelope.BodyOneofCase.Progress: progress?.Invoke(e.Progress); break;
                case Envelope.BodyOneofCase.Report: return e.Report;
                default: Check(e); throw new ProtocolException($"unexpected {e.BodyCase} during a migration");
            }
        }
    }

    /// <summary>
    /// Follows a guest across hosts: asks <paramref name="address"/>, and while the answer is
    /// "moved to X", asks X. Returns the host that runs it and its status there.
    /// </summary>
    public static (string Host, GuestInfo Info) Locate(string address, string name, int maxHops = 8, TlsIdentity? tls = null)
    {
        string at = address;
        for (int hop = 0; hop < maxHops; hop++)
        {
            using var c = Connect(at, tls);
            var info = c.Status(name).Guests.Single();
            if (info.Status == GuestStatus.Moved && !string.IsNullOrEmpty(info.MovedTo)) { at = info.MovedTo; continue; }
            return (at, info);
        }
        throw new HostException($"'{name}' moved more than {maxHops} times; giving up following it");
    }

    public void Dispose() => _conn.Dispose();
}
