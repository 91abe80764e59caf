using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.State;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.State;

/// <summary>The canonical state digest (FORMAT.md, "State digest"): what it covers and what it ignores.</summary>
public class DigestTests
{
    private static Machine NewMachine() => new(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());

    /// <summary>A machine in a state with something in every device: mid-way through the kv guest.</summary>
    private static Machine Busy()
    {
        var m = GuestRun.Load("kv", GuestRun.PortFor("kv"));
        m.Run(40_000);
        m.DeliverSerialInput("SET"u8); // bytes waiting in the UART's FIFO
        return m;
    }

    [Fact]
    public void A_device_save_version_bump_leaves_the_digest_unchanged()
    {
        using var m = Busy();
        ulong digest = m.ComputeDigest();
        byte[] saved = m.SaveDeviceState();
        m.Uart.SaveVersion = 7; // as a later build that bumped the UART's section would write it
        Assert.NotEqual(saved, m.SaveDeviceState());
        Assert.Equal(digest, m.ComputeDigest());
    }

    [Fact]
    public void A_restored_machine_has_the_digest_of_the_saved_one()
    {
        using var a = Busy();
        var w = new StateWriter();
        a.SaveState(w);
        using var b = new Machine(a.Config, new TestHostPort());
        b.RestoreState(new StateReader(w.ToArray()));
        Assert.Equal(a.ComputeDigest(), b.ComputeDigest());
    }

    [Fact]
    public unsafe void Every_cpu_field_is_covered_but_what_no_instruction_observes_is_not()
    {
        using var m = NewMachine();
        var seen = new HashSet<ulong> { m.ComputeDigest() };
        ref var c = ref m.Cpu;
        // Unobservable: the x0 write sink, an LR value without a reservation.
        c.X[CpuState.SinkRegister] = 0x1234;
        c.ReservationValue = 99;
        Assert.Contains(m.ComputeDigest(), seen);
        // Observable: each change gives a digest not seen before, the struct's first and last fields included.
        void Changes(string what)
        {
            Assert.True(seen.Add(m.ComputeDigest()), $"{what} did not change the digest");
        }
        c.X[1] = 1; Changes("x1");
        c.X[31] = 1; Changes("x31");
        c.Pc += 4; Changes("pc");
        c.Icount++; Changes("icount");
        c.Mscratch = 5; Changes("mscratch");
        c.Reservation = 0x8000_0000; Changes("reservation");
        c.ReservationValue = 7; Changes("LR value while reserved");
        c.Waiting = 1; Changes("WFI flag");
    }

    [Fact]
    public void Device_state_and_ram_are_covered()
    {
        using var m = NewMachine();
        var seen = new HashSet<ulong> { m.ComputeDigest() };
        m.DeliverSerialInput("x"u8);
        Assert.True(seen.Add(m.ComputeDigest()), "UART FIFO");
        m.Uart.Write(7, 1, 0x5A); // scratch register
        Assert.True(seen.Add(m.ComputeDigest()), "UART SCR");
        m.Plic.Write(4 * 3, 4, 2);
        Assert.True(seen.Add(m.ComputeDigest()), "PLIC priority");
        m.Clint.Write(0x4000, 8, 1234);
        Assert.True(seen.Add(m.ComputeDigest()), "CLINT mtimecmp");
        m.Balloon.ReportFree(10, 2);
        Assert.True(seen.Add(m.ComputeDigest()), "balloon free range");
        m.Memory.Write(m.Memory.Base + 0x3000, [1]);
        Assert.True(seen.Add(m.ComputeDigest()), "RAM byte");
    }

    [Fact]
    public void Cpu_fields_appended_as_zero_change_no_digest()
    {
        var state = new byte[64];
        state[3] = 1;
        state[40] = 2;
        var grown = new byte[state.Length + 24]; // a later CpuState with three more u64 fields, all zero
        state.CopyTo(grown, 0);
        Assert.Equal(Machine.CanonicalCpuBytes(state).ToArray(), Machine.CanonicalCpuBytes(grown).ToArray());
        Assert.Equal(48, Machine.CanonicalCpuBytes(state).Length); // up to the last non-zero word
        grown[70] = 1;
        Assert.NotEqual(Machine.CanonicalCpuBytes(state).ToArray(), Machine.CanonicalCpuBytes(grown).ToArray());
    }
}
