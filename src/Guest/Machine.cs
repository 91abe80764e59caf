using System.Runtime.InteropServices;
using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Debug;
using LiveMigration.Guest.Devices;
using LiveMigration.Guest.Devices.Balloon;
using LiveMigration.Guest.Devices.Clint;
using LiveMigration.Guest.Devices.Finisher;
using LiveMigration.Guest.Devices.Plic;
using LiveMigration.Guest.Devices.Uart;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.Platform;

namespace LiveMigration.Guest;

/// <summary>
/// The deterministic RV64 machine: one hart (M, S and U modes, Sv39/48/57, PMP), DRAM and the QEMU virt devices we model.
/// The state after N instructions is a pure function of the initial state and the inputs delivered
/// through <see cref="IHostPort"/> at their icounts.
/// </summary>
public sealed unsafe partial class Machine : IDisposable
{
    /// <summary>Instructions per call into the interpreter: bounds the latency of <see cref="RequestStop"/>.</summary>
    private const ulong SliceLength = 1 << 20;

    private readonly CpuState* _cpu;
    private readonly Hart _hart;
    private IMmioDevice[] _devices;
    private volatile bool _stopRequested;

    /// <param name="compileBlocks">Compile hot blocks to IL (in the background): a host's choice that changes speed, never behaviour, so it is not part of <see cref="MachineConfig"/>.</param>
    public Machine(MachineConfig config, IHostPort hostPort, bool compileBlocks = true, short compileThreshold = DefaultCompileThreshold)
        : this(config, hostPort, compileBlocks ? BlockCompilation.Background : BlockCompilation.Off, compileThreshold) { }

    /// <summary>
    /// Entries of a block before it is compiled. The .NET JIT takes about as long to compile a block
    /// as the interpreter takes for several thousand entries of it, and a boot runs most of its code
    /// far fewer times: at 64, a Linux boot compiled thousands of blocks it hardly reused and took
    /// 0.78 s to the banner, at 8192 it takes 0.44 s, while long runs keep their speed.
    /// </summary>
    public const short DefaultCompileThreshold = 8192;

    /// <param name="compilation">Whether and where hot blocks are compiled to IL: speed only, never behaviour.</param>
    /// <param name="compileThreshold">Entries of a block before it is compiled (tests of the compiler pass a low one).</param>
    public Machine(MachineConfig config, IHostPort hostPort, BlockCompilation compilation, short compileThreshold = DefaultCompileThreshold)
    {
        if (MachineConfig.MemorySizeProblem(config.MemorySize) is { } problem) throw new ArgumentException(problem, nameof(config));
        Config = config;
        HostPort = hostPort;
        Memory = new GuestMemory(config.MemorySize);
        _cpu = (CpuState*)NativeMemory.AllocZeroed((nuint)sizeof(CpuState));
        Clint = new Clint(this);
        Plic = new Plic(this);
        Uart = new Uart16550(this);
        Finisher = new SifiveTest(this);
        Balloon = new BalloonDevice(this);
        if (config.Virtio != VirtioDevices.None) Virtio = new VirtioBus(this, config.Virtio);
        _blk = Virtio?.Block;
        _devices = Virtio == null ? [Finisher, Clint, Plic, Uart, Balloon] : [Finisher, Clint, Plic, Uart, Balloon, Virtio];
        Debug = new DebugHooks(this);
        _hart = new Hart(this, _cpu, compilation, compileThreshold);
        Reset(Memory.Base);
    }

    public MachineConfig Config { get; }
    public IHostPort HostPort { get; set; }
    public GuestMemory Memory { get; }
    public Clint Clint { get; }
    public Plic Plic { get; }
    public Uart16550 Uart { get; }
    public SifiveTest Finisher { get; }
    public DebugHooks Debug { get; }

    /// <summary>The virtio-mmio slots, when the config has virtio devices.</summary>
    public VirtioBus? Virtio { get; }

    private readonly VirtioBlk? _blk;

    /// <summary>The disk behind virtio-blk, once the host inserted one (<see cref="InsertDisk"/>).</summary>
    public Disk? Disk => _blk?.Disk;

    /// <summary>Puts the host's disk into the machine's virtio-blk (the config must have <see cref="VirtioDevices.Block"/>).</summary>
    public void InsertDisk(Disk disk)
    {
        if (_blk == null) throw new InvalidOperationException("this machine has no virtio-blk device (its config lacks VirtioDevices.Block)");
        _blk.Insert(disk);
    }

    /// <summary>The boot ROM (firmware hand-off and device tree), once a kernel boot installed one.</summary>
    public BootRom? BootRom { get; private set; }

    /// <summary>Puts the boot ROM on the bus; it then saves, restores and digests with the devices.</summary>
    internal void InstallBootRom(BootRom rom)
    {
        if (BootRom != null) throw new InvalidOperationException("the machine already has a boot ROM");
        BootRom = rom;
        _devices = [.. _devices, rom];
    }

    /// <summary>True while <see cref="Run"/> executes guest code.</summary>
    public bool IsRunning { get; private set; }

    /// <summary>Icount when the current <see cref="Run"/> began: a breakpoint there does not stop it again.</summary>
    internal ulong RunStartIcount { get; private set; }

    /// <summary>Free-page reporting: pages the guest does not use, which migration skips.</summary>
    public BalloonDevice Balloon { get; }

    public ref CpuState Cpu => ref *_cpu;
    public ulong Icount => _cpu->Icount;
    public ulong Pc => _cpu->Pc;

    /// <summary>Set once the guest writes the finisher.</summary>
    public int? ExitCode { get; private set; }

    public void Reset(ulong entry)
    {
        *_cpu = default;
        _cpu->Pc = entry;
        _cpu->Reservation = ulong.MaxValue;
        _cpu->Mstatus = Mstatus.Xlen64;
        _cpu->Priv = Priv.M;
        for (int i = 0; i < Triggers.Count; i++) _cpu->Tdata1[i] = Triggers.ResetTdata1;
        _hart.FlushTlb();
        foreach (var d in _devices) d.Reset();
        ExitCode = null;
    }

    /// <summary>Register x<paramref name="index"/>; x0 is always zero.</summary>
    public ulong GetRegister(int index) => index == 0 ? 0 : _cpu->X[index];

    public void SetRegister(int index, ulong value)
    {
        if (index is <= 0 or >= 32) return;
        _cpu->X[index] = value;
    }

    public void SetPc(ulong pc) => _cpu->Pc = pc;

    /// <summary>The physical address a debugger means by <paramref name="va"/> (through the current page tables when paging is on).</summary>
    public bool TryTranslateForDebugger(ulong va, out ulong pa) => _hart.DebugTranslate(va, out pa);

    /// <summary>Asks a running <see cref="Run"/> to return at the next instruction boundary it checks (any thread).</summary>
    public void RequestStop() => _stopRequested = true;

    /// <summary>
    /// The earliest time at which an enabled timer interrupt becomes pending, or <see cref="ulong.MaxValue"/>:
    /// CLINT's mtimecmp behind MTIE and, with Sstc on (menvcfg.STCE), stimecmp behind STIE. A sleeping
    /// hart wakes there; Linux under OpenSBI arms only stimecmp.
    /// </summary>
    public ulong TimerDeadline
    {
        get
        {
            ulong mie = _cpu->Mie, deadline = ulong.MaxValue;
            if ((mie & Irq.MTIP) != 0) deadline = Clint.Mtimecmp;
            if ((mie & Irq.STIP) != 0 && (_cpu->Menvcfg & Envcfg.STCE) != 0) deadline = Math.Min(deadline, _cpu->Stimecmp);
            return deadline;
        }
    }

    /// <summary>
    /// The next time a timer comparator (mtimecmp; stimecmp with Sstc on) is crossed, enabled or not,
    /// or <see cref="ulong.MaxValue"/>: a port delivers the time there so polled mip bits rise on time.
    /// </summary>
    public ulong NextTimerEdge
    {
        get
        {
            ulong time = Clint.Time, edge = ulong.MaxValue;
            if (Clint.Mtimecmp > time) edge = Clint.Mtimecmp;
            if ((_cpu->Menvcfg & Envcfg.STCE) != 0 && _cpu->Stimecmp > time) edge = Math.Min(edge, _cpu->Stimecmp);
            return edge;
        }
    }

    /// <summary>Whether a device interrupt (UART, virtio through the PLIC) can wake a sleeping hart, at M or S level.</summary>
    public bool ExternalInterruptsEnabled => (_cpu->Mie & (Irq.MEIP | Irq.SEIP)) != 0;

    /// <summary>The mip register as the devices drive it.</summary>
    public ulong Mip => _hart.Mip(
        (Clint.Msip != 0 ? Irq.MSIP : 0) | (Clint.TimerPending ? Irq.MTIP : 0) | (Plic.MachineExternalPending ? Irq.MEIP : 0)
        | (Plic.SupervisorExternalPending ? Irq.SEIP : 0));

    /// <summary>Runs until the guest exits, <paramref name="maxIcount"/> is reached, a stop is requested or the hart idles for good.</summary>
    public StopReason Run(ulong maxIcount = ulong.MaxValue)
    {
        RunStartIcount = _cpu->Icount;
        IsRunning = true;
        Memory.GuestThread = Environment.CurrentManagedThreadId;
        Memory.SetGuestActive(true);
        try { return RunLoop(maxIcount); }
        finally
        {
            Memory.SetGuestActive(false);
            IsRunning = false;
        }
    }

    private StopReason RunLoop(ulong maxIcount)
    {
        while (true)
        {
            if (Debug.Pending is { } stop)
            {
                Debug.Pending = null;
                Debug.LastStop = stop;
                return StopReason.Debug;
            }
            if (ExitCode != null) return StopReason.Exited;
            if (_stopRequested) { _stopRequested = false; return StopReason.StopRequested; }
            if (_cpu->Icount >= maxIcount) return StopReason.InstructionLimit;
            if (_cpu->Icount >= HostPort.NextPollIcount)
            {
                // Ports may block or throttle in Poll: no store is in flight meanwhile.
                Memory.SetGuestActive(false);
                HostPort.Poll(this);
                Memory.SetGuestActive(true);
            }
            if (_blk != null && _blk.TakeAnnouncement())
            {
                // Post-copy: a request whose disk blocks cannot come now waits, and so does the guest.
                if (!_blk.EnsureBlocksPresent()) return StopReason.PageUnavailable;
                HostPort.BlockRequestsPending(this);
            }

            ulong pending = Mip & _cpu->Mie;
            if (pending != 0)
            {
                _cpu->Waiting = 0; // WFI wakes on any pending enabled interrupt, even when globally disabled
                ulong cause = _hart.InterruptToTake(pending);
                if (cause != 0) _hart.TakeInterrupt(cause);
            }
            if (_cpu->Waiting != 0)
            {
                Memory.SetGuestActive(false); // asleep: no store in flight while the port blocks
                bool woke = HostPort.WaitForInput(this);
                Memory.SetGuestActive(true);
                if (!woke) return StopReason.Idle;
                continue;
            }

            ulong limit = Math.Min(maxIcount, Math.Min(HostPort.NextPollIcount, _cpu->Icount + SliceLength));
            if (limit <= _cpu->Icount) limit = _cpu->Icount + 1;
            _hart.Execute(limit);
            Memory.SafePoint();
            if (_hart.TakeStall()) return StopReason.PageUnavailable;
        }
    }

    // ---- Inputs (called by host ports between instructions) ----

    /// <summary>Delivers the current time (10 MHz ticks). May raise the timer interrupt.</summary>
    public void DeliverTime(ulong mtime) => Clint.SetTime(mtime);

    /// <summary>Delivers serial input; returns how many bytes the UART accepted.</summary>
    public int DeliverSerialInput(ReadOnlySpan<byte> data) => Uart.Receive(data);

    /// <summary>Disk requests taken off virtio-blk's queue and not yet completed.</summary>
    public int BlockRequestsInFlight => _blk?.InFlight ?? 0;

    /// <summary>Completes the <paramref name="count"/> oldest disk requests now (reads see the disk at this icount).</summary>
    public void CompleteBlockRequests(int count)
    {
        if (_blk == null) throw new InvalidOperationException("this machine has no virtio-blk device");
        _blk.Complete(count);
    }

    // ---- Called by devices ----

    internal ulong ReadTime()
    {
        ulong t = HostPort.ReadTime(this);
        Clint.SetTime(t);
        return t;
    }

    internal void Finish(int code)
    {
        ExitCode ??= code;
        _hart.BreakOut();
    }

    /// <summary>A device or CSR changed something an interrupt depends on: leave the inner loop to re-check.</summary>
    internal void InterruptStateChanged() => _hart.BreakOut();

    internal IMmioDevice? FindDevice(ulong address)
    {
        foreach (var d in _devices)
            if (address - d.Base < d.Length) return d;
        return null;
    }

    private int _disposed;

    /// <summary>True once <see cref="Dispose"/> ran; the machine may not be used after that.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Frees the CPU state and RAM once; later calls, from any thread, do nothing.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Memory.Dispose();
        _hart.Dispose();
        NativeMemory.Free(_cpu);
    }
}
