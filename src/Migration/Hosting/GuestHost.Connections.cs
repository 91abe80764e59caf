using System.Net.Sockets;
using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Platform;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Hosting;

// The host's listener: accepting, the handshake, and the control requests of a connection.
public sealed partial class GuestHost
{
    private readonly (double Tokens, long At, int Dropped)[] _refusalBudget = new (double, long, int)[3];
    private readonly object _refusalLock = new();

    /// <summary>
    /// Accepts without a thread per connection: the TLS handshake, Hello and an idle control connection
    /// wait asynchronously, so a thousand idle peers cost sockets, not threads. A thread is taken only
    /// for work that blocks: an incoming migration (at most <see cref="HostOptions.MaxConnections"/>)
    /// and the requests that run long (start, stop, migrate, resolve).
    /// </summary>
    private async Task AcceptLoopAsync()
    {
        while (!_shutdown.IsCancellationRequested)
        {
            Socket socket;
            try { socket = await _listener.AcceptSocketAsync(_shutdown.Token); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException or InvalidOperationException) { return; }
            if (Interlocked.Increment(ref _open) > Options.MaxConnections)
            {
                Interlocked.Decrement(ref _open);
                string from = "?";
                try { from = socket.RemoteEndPoint?.ToString() ?? "?"; } catch (SocketException) { }
                socket.Close(0);
                LogRefusal(Refusal.ConnectionLimit, $"refused a connection from {from}: {Options.MaxConnections} connections are open (--max-connections)");
                continue;
            }
            _ = ServeAsync(socket);
        }
    }

    /// <summary>What a refused or dropped connection was, for <see cref="LogRefusal"/>'s per-kind budget.</summary>
    private enum Refusal { ConnectionLimit, Handshake, Idle }

    /// <summary>
    /// Refusals come in floods from a hostile peer: each kind logs a burst of 10 lines, then one a
    /// second, and the next line says how many were left out.
    /// </summary>
    private void LogRefusal(Refusal kind, string line)
    {
        const double Burst = 10;
        long now = Environment.TickCount64;
        lock (_refusalLock)
        {
            ref var b = ref _refusalBudget[(int)kind];
            if (b.At == 0) b = (Burst, now, 0);
            b.Tokens = Math.Min(Burst, b.Tokens + (now - b.At) / 1000.0);
            b.At = now;
            if (b.Tokens < 1) { b.Dropped++; return; }
            b.Tokens--;
            if (b.Dropped > 0) line += $" (and {b.Dropped} more like it not logged)";
            b.Dropped = 0;
        }
        Log(line);
    }

    private async Task ServeAsync(Socket socket)
    {
        Connection conn;
        string from = "?";
        try { from = socket.RemoteEndPoint?.ToString() ?? "?"; } catch (Exception x) when (x is SocketException or ObjectDisposedException) { }
        try { conn = await Connection.AcceptAsync(socket, Options.Tls, Options.HandshakeTimeout, _shutdown.Token); }
        catch (Exception e)
        {
            socket.Dispose();
            Interlocked.Decrement(ref _open);
            if (e is IOException or SocketException) LogRefusal(Refusal.Handshake, $"refused a connection from {from}: {e.Message}");
            else if (e is not (ObjectDisposedException or OperationCanceledException)) Log($"internal error accepting {from}: {e}");
            return;
        }
        lock (_connections) _connections.Add(conn);
        bool handshaken = false;
        try
        {
            conn.SendTimeout = Options.ReadTimeout;
            conn.FrameTimeout = Options.ReadTimeout;
            var purpose = await conn.ServerHandshakeAsync(Options.HandshakeTimeout, p => Authorization.Denial(conn.Peer, p), _shutdown.Token);
            handshaken = true;
            if (purpose == Purpose.Migrate)
            {
                conn.Validate = new IncomingStreamRules(this, conn).Check;
                // The stream's first message (its set-up) is awaited too; a migration takes a thread once it has begun.
                var first = await conn.ReceiveAsync(TimeSpan.FromSeconds(10), _shutdown.Token);
                await OnThread(() => { new MigrationDestination(this, conn).Run(first); return true; }, "host-migration-in");
            }
            else await ControlLoopAsync(conn);
        }
        catch (ProtocolException e) { Log($"connection from {conn.Remote}: {e.Message}"); }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            if (!handshaken && e is IOException && !_shutdown.IsCancellationRequested) LogRefusal(Refusal.Handshake, $"dropped a connection from {conn.Remote} at the handshake: {e.Message}");
        }
        catch (Exception e)
        {
            // One connection's bug must not take the host and its guests down: log it loudly.
            Log($"internal error serving {conn.Remote}: {e}");
        }
        finally
        {
            lock (_connections) _connections.Remove(conn);
            conn.Dispose();
            Interlocked.Decrement(ref _open);
        }
    }

    /// <summary>Work that blocks runs on a thread of its own, never on the pool that serves the idle connections.</summary>
    private static Task<T> OnThread<T>(Func<T> work, string name)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        new Thread(() =>
        {
            try { done.SetResult(work()); }
            catch (Exception e) { done.SetException(e); }
        }) { IsBackground = true, Name = name }.Start();
        return done.Task;
    }

    private async Task ControlLoopAsync(Connection conn)
    {
        while (true)
        {
            Envelope request;
            try { request = await conn.ReceiveAsync(Options.IdleTimeout, _shutdown.Token); }
            catch (EndOfStreamException) { return; }
            catch (FrameTooLargeException e)
            {
                // Say why before closing, and take in what the client is still writing, so it reads this instead of a reset.
                try { await conn.SendAsync(new Envelope { Result = new Result { Ok = false, Error = $"refused: {e.Message}" } }); } catch (IOException) { }
                Log($"refused a request from {conn.Remote} ({conn.Peer}): {e.Message}");
                await conn.DiscardAsync(Math.Min(e.Length, 2L * FrameLimits.MaxElf), Options.ReadTimeout);
                return;
            }
            catch (IdleTimeoutException e)
            {
                LogRefusal(Refusal.Idle, $"closed an idle connection from {conn.Remote} ({conn.Peer}): {e.Message} (--idle-timeout)");
                return;
            }
            // Quick reads answer on the pool; anything that may block (a migration runs for seconds) gets a thread.
            var reply = request.BodyCase is Envelope.BodyOneofCase.StatusRequest or Envelope.BodyOneofCase.GoQuery or Envelope.BodyOneofCase.ArrivalQuery
                ? Handle(conn, request)
                : await OnThread(() => Handle(conn, request), "host-request");
            await conn.SendAsync(reply);
        }
    }

    private Envelope Handle(Connection conn, Envelope request)
    {
        try
        {
            if (Authorization.For(request.BodyCase) is not { } kind) throw new HostException($"unexpected control message {request.BodyCase}");
            if (Authorization.Denial(conn.Peer, kind) is { } denied)
            {
                Log($"refused {request.BodyCase} from {conn.Remote}: {denied}");
                throw new HostException(denied);
            }
            return request.BodyCase switch
            {
                Envelope.BodyOneofCase.StartGuest => Ok(StartGuest(request.StartGuest)),
                Envelope.BodyOneofCase.StatusRequest => new Envelope { StatusReply = Status(request.StatusRequest.Name) },
                Envelope.BodyOneofCase.StopGuest => Ok(StopGuest(request.StopGuest.Name)),
                Envelope.BodyOneofCase.MigrateCommand => new Envelope { Report = Migrate(request.MigrateCommand, p => conn.Send(new Envelope { Progress = p })) },
                Envelope.BodyOneofCase.Cancel => Ok(Cancel(request.Cancel.Name)),
                Envelope.BodyOneofCase.Resolve => Ok(Resolve(request.Resolve.Name, request.Resolve.Decision)),
                Envelope.BodyOneofCase.GoQuery => new Envelope { GoAnswer = AnswerGoQuery(request.GoQuery.MigrationId, conn.Peer) },
                Envelope.BodyOneofCase.ArrivalQuery => new Envelope { ArrivalAnswer = AnswerArrivalQuery(request.ArrivalQuery, conn.Peer) },
                _ => throw new HostException($"unexpected control message {request.BodyCase}"),
            };
        }
        catch (Exception e) when (e is HostException or ElfLoadException or BootImageException or FormatException or InvalidDataException)
        {
            if (request.BodyCase is Envelope.BodyOneofCase.StartGuest or Envelope.BodyOneofCase.MigrateCommand
                && Authorization.For(request.BodyCase) is { } asked && Authorization.Allows(conn.Peer, asked)) // a denial is logged where it is made
                Log($"refused {request.BodyCase} from {conn.Remote} ({conn.Peer}): {e.Message}");
            return new Envelope { Result = new Result { Ok = false, Error = e.Message } };
        }
    }
}
