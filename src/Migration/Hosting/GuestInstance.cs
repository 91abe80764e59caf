using LiveMigration.Guest;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Hosting;

/// <summary>
/// One guest running on a host: its machine, its own thread, its console. The thread runs the
/// machine until asked to pause (migration), stop (operator) or until the guest exits. Pause and
/// resume may be called from any thread; the machine's state may be read only while paused.
/// </summary>
public sealed class GuestInstance : IDisposable
{
    private readonly object _gate = new();
    private readonly Thread _thread;
    private bool _pauseRequested;
    private bool _terminate;
    private bool _halted;
    private bool _isPaused;
    private bool _started;

    public GuestInstance(string name, string imageName, Machine machine, GuestHostPort port)
    {
        Name = name;
        ImageName = imageName;
        Machine = machine;
        Port = port;
        _thread = new Thread(Loop) { IsBackground = true, Name = $"guest-{name}" };
    }

    public string Name { get; }
    public string ImageName { get; }
    public Machine Machine { get; }
    /// <summary>The image file of the guest's disk on this host (null without one); the instance owns the open disk.</summary>
    public string? DrivePath { get; set; }
    public GuestHostPort Port { get; }
    public ConsoleEndpoint Console => Port.Console;
    public StopReason? HaltReason { get; private set; }
    public Exception? Crash { get; private set; }
    /// <summary>True when the guest paused itself on a post-copy page that could not be fetched.</summary>
    public bool PageStalled { get; private set; }

    public GuestStatus State
    {
        get
        {
            lock (_gate)
            {
                if (_terminate) return GuestStatus.Stopped;
                if (Crash != null) return GuestStatus.Crashed;
                if (_halted) return HaltReason == StopReason.Exited ? GuestStatus.Exited : GuestStatus.Idle;
                if (_pauseRequested) return _isPaused ? GuestStatus.Paused : GuestStatus.Pausing;
                if (Fenced) return _isPaused ? GuestStatus.Fenced : GuestStatus.Fencing; // fenced: its thread stands still
                return GuestStatus.Running;
            }
        }
    }

    /// <summary>The host lost its lease (fleet): the guest stands still until the permit is extended.</summary>
    private bool Fenced => Port.Permit is { Expired: true };

    /// <summary>True while the guest may execute (not paused, halted or stopped).</summary>
    public bool IsRunning { get { lock (_gate) return _started && !_terminate && !_halted && !_pauseRequested; } }

    public void Start()
    {
        // Started under the gate: a concurrent Terminate must never see _started before the thread runs.
        lock (_gate)
        {
            _started = true;
            _thread.Start();
        }
    }

    /// <summary>
    /// Starts the thread parked (a migration destination after its ACK): <see cref="Resume"/> then
    /// only wakes it, so the switchover's downtime does not pay for creating a thread.
    /// </summary>
    public void StartPaused()
    {
        lock (_gate) _pauseRequested = true;
        Start();
    }

    private void Loop()
    {
        try
        {
            bool bound = false;
            while (true)
            {
                lock (_gate)
                {
                    while (!_terminate && (_pauseRequested || _halted || Fenced))
                    {
                        _isPaused = true;
                        Monitor.PulseAll(_gate);
                        if (_pauseRequested || _halted) Monitor.Wait(_gate);
                        else Monitor.Wait(_gate, 10); // fenced: runs again once the host's permit is extended
                    }
                    if (_terminate) break;
                    _isPaused = false;
                }
                // Bound on the first run, not at construction: a migration destination builds its
                // instance while the replay still drives the machine through another port.
                if (!bound) { Machine.HostPort = Port; bound = true; }
                var reason = Machine.Run();
                if (reason is StopReason.Exited or StopReason.Idle)
                {
                    Console.Flush();
                    lock (_gate) { _halted = true; HaltReason = reason; }
                }
                else if (reason == StopReason.PageUnavailable)
                {
                    // Post-copy: a page the guest needs cannot come now. Not an exit: stay paused before
                    // that instruction until someone resumes the guest (after the page can be fetched).
                    Console.Flush();
                    lock (_gate) { _pauseRequested = true; PageStalled = true; }
                }
            }
        }
        catch (Exception e)
        {
            lock (_gate) { Crash = e; _halted = true; }
        }
        finally
        {
            Console.Flush();
            lock (_gate) { _isPaused = true; Monitor.PulseAll(_gate); }
        }
    }

    /// <summary>Stops the guest at an instruction boundary and waits until its thread has let go of the machine.</summary>
    public void Pause()
    {
        lock (_gate)
        {
            _pauseRequested = true;
            if (!_started) { _isPaused = true; return; }
        }
        while (true)
        {
            Port.Wake();
            Machine.RequestStop();
            lock (_gate)
            {
                if (_isPaused) return;
                Monitor.Wait(_gate, 50);
                if (_isPaused) return;
            }
        }
    }

    public void Resume()
    {
        lock (_gate)
        {
            _pauseRequested = false;
            PageStalled = false;
            Port.ClearWake();
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Ends the guest's thread for good (stop, or the guest moved away). Safe to call twice.</summary>
    public void Terminate()
    {
        lock (_gate)
        {
            _terminate = true;
            Monitor.PulseAll(_gate);
        }
        Port.Wake();
        Machine.RequestStop();
        if (_started && Thread.CurrentThread != _thread) _thread.Join();
    }

    public void Dispose()
    {
        Terminate();
        Console.Dispose();
        var disk = Machine.Disk;
        Machine.Dispose();
        disk?.Dispose();
    }
}
