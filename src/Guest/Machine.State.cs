using System.Runtime.InteropServices;
using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest;

/// <summary>Save/restore of the whole machine and copy-on-write snapshots (the digest is in Machine.Digest.cs).</summary>
public sealed unsafe partial class Machine
{
    // Bump when a field is added to or removed from the section; readers accept 1..current.
    // 2: the virtio devices (written only by machines that have some, so bare-metal states stay version 1).
    private const ushort MachineStateVersion = 2;
    private const ushort CpuStateVersion = 3; // 2: ReservationValue; 3: privilege modes, S-mode CSRs, PMP, triggers
    private const ushort RamStateVersion = 1;
    private const int SavedRegisters = 31; // x1..x31, recorded so a size mismatch is caught on load

    public void SaveState(StateWriter w) => SaveState(w, SaveDeviceState(), null, null);

    private void SaveState(StateWriter w, byte[] cpuAndDevices, MemorySnapshot? snapshot, Devices.Virtio.Block.DiskSnapshot? disk)
    {
        w.BeginSection("MACH", Config.Virtio == Devices.Virtio.VirtioDevices.None ? (ushort)1 : MachineStateVersion);
        w.U64(Config.MemorySize);
        w.U64(Memory.Base);
        if (Config.Virtio != Devices.Virtio.VirtioDevices.None) w.U32((uint)Config.Virtio);
        w.EndSection();
        w.Bytes(cpuAndDevices);
        SaveRam(w, snapshot);
        // Only a machine with virtio-blk has this section: every other machine saves as before.
        if (_blk != null) Devices.Virtio.Block.DiskState.Save(w, Disk, disk);
    }

    /// <summary>CPU and device sections: everything but RAM.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public byte[] SaveDeviceState()
    {
        var w = new StateWriter();
        SaveCpu(w);
        SaveFpu(w);
        foreach (var d in _devices) d.Save(w);
        return w.ToArray();
    }

    private void SaveCpu(StateWriter w)
    {
        w.BeginSection("CPU ", CpuStateVersion);
        w.U8(SavedRegisters);
        WriteCpuFields(w);
        WriteSupervisorFields(w);
        w.EndSection();
    }

    /// <summary>The v3 fields, in their saved order (after the v2 ones).</summary>
    private void WriteSupervisorFields(StateWriter w)
    {
        CpuState* s = _cpu;
        w.U64(s->Mstatus);
        w.U32(s->Priv);
        w.U64(s->Medeleg);
        w.U64(s->Mideleg);
        w.U64(s->MipSoft);
        w.U64(s->Mcounteren);
        w.U64(s->Menvcfg);
        w.U64(s->Stvec);
        w.U64(s->Sscratch);
        w.U64(s->Sepc);
        w.U64(s->Scause);
        w.U64(s->Stval);
        w.U64(s->Satp);
        w.U64(s->Scounteren);
        w.U64(s->Senvcfg);
        w.U64(s->Stimecmp);
        for (int i = 0; i < Pmp.Entries; i++) w.U8(s->PmpCfg[i]);
        for (int i = 0; i < Pmp.Entries; i++) w.U64(s->PmpAddr[i]);
        w.U64(s->Tselect);
        for (int i = 0; i < Triggers.Count; i++) { w.U64(s->Tdata1[i]); w.U64(s->Tdata2[i]); }
    }

    private void ReadSupervisorFields(StateReader r, ref CpuState c)
    {
        c.Mstatus = r.U64() & (Mstatus.WritableMask | Mstatus.UXL | Mstatus.SXL);
        c.Priv = r.U32();
        if (c.Priv is not (Priv.M or Priv.S or Priv.U)) throw new InvalidDataException($"CPU state names privilege level {c.Priv}");
        c.Medeleg = r.U64() & Cause.Delegable;
        c.Mideleg = r.U64() & Irq.Delegable;
        c.MipSoft = r.U64() & Irq.MipWritable;
        c.Mcounteren = r.U64();
        c.Menvcfg = r.U64() & Envcfg.MenvcfgWritable;
        c.Stvec = r.U64();
        c.Sscratch = r.U64();
        c.Sepc = r.U64();
        c.Scause = r.U64();
        c.Stval = r.U64();
        c.Satp = r.U64();
        if (!Sv.IsValidMode(c.Satp)) throw new InvalidDataException($"CPU state has satp mode {c.Satp >> 60}, which this hart does not support");
        c.Scounteren = r.U64();
        c.Senvcfg = r.U64() & Envcfg.SenvcfgWritable;
        c.Stimecmp = r.U64();
        for (int i = 0; i < Pmp.Entries; i++) c.PmpCfg[i] = r.U8();
        for (int i = 0; i < Pmp.Entries; i++) c.PmpAddr[i] = r.U64();
        c.Tselect = r.U64();
        if (c.Tselect >= Triggers.Count) throw new InvalidDataException($"CPU state selects trigger {c.Tselect}; there are {Triggers.Count}");
        for (int i = 0; i < Triggers.Count; i++) { c.Tdata1[i] = r.U64(); c.Tdata2[i] = r.U64(); }
    }

    /// <summary>The CPU fields in their saved order (CPU section v2).</summary>
    private void WriteCpuFields(StateWriter w)
    {
        CpuState* s = _cpu;
        for (int i = 1; i <= SavedRegisters; i++) w.U64(s->X[i]);
        w.U64(s->Pc);
        w.U64(s->Icount);
        w.U64(s->Mstatus & Mstatus.LegacyMask); // v2's mstatus; the rest follows in the v3 fields
        w.U64(s->Mie);
        w.U64(s->Mtvec);
        w.U64(s->Mscratch);
        w.U64(s->Mepc);
        w.U64(s->Mcause);
        w.U64(s->Mtval);
        w.U64(s->Mcountinhibit);
        w.U64(s->McycleOffset);
        w.U64(s->MinstretOffset);
        w.U64(s->Reservation);
        w.U32(s->Waiting);
        w.U64(s->ReservationValue);
    }

    private Action PrepareCpu(StateReader r)
    {
        ushort version = r.OpenSection("CPU ", 1, CpuStateVersion);
        if (r.U8() != SavedRegisters) throw new InvalidDataException("CPU state has a different register count");
        CpuState c = default;
        for (int i = 1; i <= SavedRegisters; i++) c.X[i] = r.U64();
        c.Pc = r.U64();
        c.Icount = r.U64();
        c.Mstatus = (r.U64() & Mstatus.LegacyMask) | Mstatus.MPP | Mstatus.Xlen64; // v1/v2 ran in M with MPP reading M
        c.Mie = r.U64() & Irq.MieWritable;
        c.Mtvec = r.U64();
        c.Mscratch = r.U64();
        c.Mepc = r.U64();
        c.Mcause = r.U64();
        c.Mtval = r.U64();
        c.Mcountinhibit = r.U64();
        c.McycleOffset = r.U64();
        c.MinstretOffset = r.U64();
        c.Reservation = r.U64();
        c.Waiting = r.U32();
        if (version >= 2) c.ReservationValue = r.U64();
        else c.Reservation = ulong.MaxValue; // v1 kept no value: drop the reservation, an SC then fails
        if (version >= 3) ReadSupervisorFields(r, ref c);
        else
        {
            c.Priv = Priv.M;
            for (int i = 0; i < Triggers.Count; i++) c.Tdata1[i] = Triggers.ResetTdata1;
        }
        r.CloseSection();
        if (c.Waiting > 1) throw new InvalidDataException($"CPU state has WFI flag {c.Waiting}");
        CpuState parsed = c; // a copy the apply step may hold (the fixed buffers of c stay on the stack)
        return () => { *_cpu = parsed; _hart.FlushTlb(); };
    }

    private void SaveRam(StateWriter w, MemorySnapshot? snapshot)
    {
        if (snapshot == null) Memory.EnsureAllPresent();
        w.BeginSection("RAM ", RamStateVersion);
        w.U32((uint)Memory.PageCount);
        long countAt = w.Stream.Position;
        w.U32(0);
        uint count = 0;
        Span<byte> page = stackalloc byte[GuestMemory.PageSize];
        for (int i = 0; i < Memory.PageCount; i++)
        {
            // Zero pages are not stored: a restore starts from zeroed RAM.
            if (snapshot != null)
            {
                if (snapshot.IsZeroPage(i)) continue;
                snapshot.ReadPage(i, page);
            }
            else
            {
                if (Memory.IsZeroPage(i)) continue;
                Memory.PageSpan(i).CopyTo(page);
            }
            w.U32((uint)i);
            w.Bytes(page);
            count++;
        }
        long end = w.Stream.Position;
        w.Stream.Position = countAt;
        w.U32(count);
        w.Stream.Position = end;
        w.EndSection();
    }

    private const int RamEntrySize = 4 + GuestMemory.PageSize; // page number, contents

    /// <summary>Checks the RAM section (page numbers in range, none twice, every byte there); the action writes it.</summary>
    private Action PrepareRam(StateReader r)
    {
        r.OpenSection("RAM ", 1, RamStateVersion);
        if (r.U32() != Memory.PageCount) throw new InvalidDataException("saved RAM has a different page count");
        uint count = r.U32();
        if (count > Memory.PageCount) throw new InvalidDataException($"saved RAM holds {count} pages; memory has {Memory.PageCount}");
        var entries = r.Slice((long)count * RamEntrySize);
        r.CloseSection();
        var present = new bool[Memory.PageCount];
        var span = entries.Span;
        for (int at = 0; at < span.Length; at += RamEntrySize)
        {
            uint page = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(span[at..]);
            if (page >= Memory.PageCount) throw new InvalidDataException($"saved RAM names page {page}, beyond the end of memory");
            if (present[page]) throw new InvalidDataException($"saved RAM holds page {page} twice");
            present[page] = true;
        }
        return () =>
        {
            var data = entries.Span;
            for (int at = 0; at < data.Length; at += RamEntrySize)
                Memory.WritePage((int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(data[at..]), data.Slice(at + 4, GuestMemory.PageSize));
            for (int i = 0; i < Memory.PageCount; i++)
                if (!present[i]) Memory.ZeroPage(i);
        };
    }

    /// <summary>Restores a state saved by <see cref="SaveState(StateWriter)"/> or a snapshot into this machine.</summary>
    public void RestoreState(StateReader r) => RestoreState(r, diskAtSavedContents: false);

    /// <summary>As <see cref="RestoreState(StateReader)"/>; with <paramref name="diskAtSavedContents"/> the inserted disk already holds the saved disk contents (checked by digest, see <see cref="Devices.Virtio.Block.DiskState.Prepare"/>).</summary>
    public void RestoreState(StateReader r, bool diskAtSavedContents)
    {
        var (saved, ramBase) = ReadMachineSection(r);
        if (saved.MemorySize != Config.MemorySize || ramBase != Memory.Base)
            throw new InvalidDataException($"saved machine has {saved.MemorySize >> 20} MiB of RAM at 0x{ramBase:x}; this machine has {Config.MemorySize >> 20} MiB at 0x{Memory.Base:x}");
        if (saved.Virtio != Config.Virtio)
            throw new InvalidDataException($"saved machine has virtio devices '{saved.Virtio}'; this machine has '{Config.Virtio}'");
        // Every section is read and checked before the first one is applied.
        var devices = PrepareDeviceState(r);
        var ram = PrepareRam(r);
        var disk = _blk != null ? Devices.Virtio.Block.DiskState.Prepare(r, Disk, diskAtSavedContents) : null;
        devices();
        ram();
        disk?.Invoke();
        Memory.FlushDecodeCache();
        ExitCode = null;
    }

    /// <summary>The configuration of the machine a saved state (<see cref="SaveState(StateWriter)"/>) came from: build one like it, then restore.</summary>
    public static MachineConfig ReadConfig(ReadOnlyMemory<byte> state) => ReadMachineSection(new StateReader(state)).Config;

    private static (MachineConfig Config, ulong RamBase) ReadMachineSection(StateReader r)
    {
        ushort version = r.OpenSection("MACH", 1, MachineStateVersion);
        ulong size = r.U64(), ramBase = r.U64();
        var virtio = version >= 2 ? (Devices.Virtio.VirtioDevices)r.U32() : Devices.Virtio.VirtioDevices.None;
        r.CloseSection();
        if ((virtio & ~Devices.Virtio.VirtioBus.KnownDevices) != 0) throw new InvalidDataException($"saved machine has unknown virtio devices 0x{(uint)virtio:x}");
        return (new MachineConfig { MemorySize = size, Virtio = virtio }, ramBase);
    }

    /// <summary>Restores CPU and device sections (the output of <see cref="SaveDeviceState"/>).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public void RestoreDeviceState(StateReader r) => PrepareDeviceState(r)();

    /// <summary>Checks the CPU and every device section; the action applies them all, in bus order.</summary>
    private Action PrepareDeviceState(StateReader r)
    {
        var steps = new List<Action>(_devices.Length + 3) { PrepareCpu(r), PrepareFpu(r) };
        for (int i = 0; i < _devices.Length; i++)
        {
            var d = _devices[i];
            // The balloon came after the first states were saved: without its section it starts empty.
            steps.Add(d == Balloon && !r.NextSectionIs("BALN") ? d.Reset : d.PrepareRestore(r));
        }
        // A booted kernel's ROM travels with its state: a machine built from the config alone gets it here.
        if (BootRom == null && r.NextSectionIs("BROM"))
        {
            var rom = Platform.BootRom.Empty();
            steps.Add(rom.PrepareRestore(r));
            steps.Add(() => InstallBootRom(rom));
        }
        return () =>
        {
            foreach (var step in steps) step();
        };
    }

    /// <summary>
    /// A copy-on-write snapshot of the whole machine: CPU and devices are copied now (they are small),
    /// RAM pages only when the guest first writes them afterwards. The guest may keep running.
    /// </summary>
    public MachineSnapshot TakeSnapshot() => new(this, Icount, SaveDeviceState(), Memory.CreateSnapshot(), ComputeDigest(), Disk?.Snapshot());

    internal void SaveSnapshot(StateWriter w, MachineSnapshot s) => SaveState(w, s.DeviceState, s.Memory, s.Disk);
}

/// <summary>A point-in-time copy of a machine (see <see cref="Machine.TakeSnapshot"/>).</summary>
public sealed class MachineSnapshot : IDisposable
{
    private readonly Machine _machine;

    internal MachineSnapshot(Machine machine, ulong icount, byte[] deviceState, MemorySnapshot memory, ulong digest, Devices.Virtio.Block.DiskSnapshot? disk)
    {
        Disk = disk;
        _machine = machine;
        Icount = icount;
        DeviceState = deviceState;
        Memory = memory;
        Digest = digest;
    }

    public ulong Icount { get; }
    public ulong Digest { get; }
    public byte[] DeviceState { get; }
    public MemorySnapshot Memory { get; }

    /// <summary>The disk at <see cref="Icount"/>, when the machine has one (its blocks are shared, not copied).</summary>
    public Devices.Virtio.Block.DiskSnapshot? Disk { get; }

    /// <summary>Writes the snapshot in the same format as <see cref="Machine.SaveState(StateWriter)"/>; safe while the guest runs.</summary>
    public void Save(StateWriter w) => _machine.SaveSnapshot(w, this);

    public void Dispose() => Memory.Dispose();
}
