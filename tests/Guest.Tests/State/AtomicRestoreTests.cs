using LiveMigration.Guest.State;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.State;

/// <summary>
/// Every restore checks its whole input before it changes anything: a corrupt section, wherever it
/// is, leaves the machine exactly as it was (same digest, same saved bytes, same device registers).
/// </summary>
public class AtomicRestoreTests
{
    private const ulong Size = 64 << 10;

    /// <summary>A machine with something in every component; <paramref name="flavour"/> makes two different ones.</summary>
    private static Machine Build(int flavour)
    {
        var m = new Machine(new MachineConfig { MemorySize = Size }, new TestHostPort());
        for (int i = 1; i < 32; i++) m.SetRegister(i, (ulong)(i * 7 + flavour));
        m.Cpu.Mscratch = 0x1000UL + (ulong)flavour;
        m.Memory.Write(m.Memory.Base + 0x1000 + (ulong)flavour * 0x1000, [1, 2, 3, (byte)flavour]);
        m.Memory.Write(m.Memory.Base + 0x5000, [9, (byte)flavour]);
        m.Clint.Write(0x4000, 8, 500 + (ulong)flavour);
        m.Plic.Write(4 * 10, 4, 1 + (ulong)flavour);
        m.Plic.Write(0x2000, 4, 1u << 10);
        m.Uart.Write(2, 1, 1);
        m.Uart.Write(1, 1, 1);
        m.Uart.Write(7, 1, 0x40 + (ulong)flavour);
        m.DeliverSerialInput(flavour == 0 ? "abc"u8 : "wxyz"u8);
        m.Balloon.ReportFree(8 + flavour, 2);
        return m;
    }

    private static byte[] Saved(Machine m)
    {
        var w = new StateWriter();
        m.SaveState(w);
        return w.ToArray();
    }

    private static (ulong Digest, byte[] State, ulong Mip) Observe(Machine m) => (m.ComputeDigest(), Saved(m), m.Mip);

    private static void AssertUnchanged((ulong Digest, byte[] State, ulong Mip) before, Machine m, string what)
    {
        var after = Observe(m);
        Assert.True(before.Digest == after.Digest, $"{what}: digest changed");
        Assert.True(before.State.AsSpan().SequenceEqual(after.State), $"{what}: saved state changed");
        Assert.True(before.Mip == after.Mip, $"{what}: interrupt lines changed");
    }

    [Fact]
    public void Every_corrupted_or_truncated_byte_leaves_the_machine_as_it_was()
    {
        byte[] good;
        using (var source = Build(1)) good = Saved(source);
        (ulong, byte[], ulong) reference;
        using (var probe = Build(0)) reference = Observe(probe);
        int headerEnd = good.Length - 2 * (4 + 4096); // the section headers and fields, not page contents
        int refused = 0;
        var cases = new List<(string What, byte[] Bytes)>();
        for (int i = 0; i < headerEnd; i++)
            foreach (byte value in new byte[] { 0xFF, 0x11 })
            {
                if (good[i] == value) continue;
                byte[] bad = (byte[])good.Clone();
                bad[i] = value;
                cases.Add(($"byte {i} = 0x{value:x2}", bad));
            }
        for (int cut = 1; cut < good.Length; cut += 37) cases.Add(($"cut at {cut}", good[..cut]));
        foreach (var (what, bytes) in cases)
        {
            using var m = Build(0);
            try { m.RestoreState(new StateReader(bytes)); }
            catch (InvalidDataException)
            {
                refused++;
                AssertUnchanged(reference, m, what);
            }
        }
        Assert.True(refused > cases.Count / 4, $"only {refused} of {cases.Count} corruptions were refused");
    }

    [Fact]
    public void A_bad_last_section_does_not_apply_the_good_ones_before_it()
    {
        using var source = Build(1);
        byte[] good = Saved(source);
        // A RAM section naming a page beyond the end: every device section before it is valid.
        int ramAt = good.AsSpan().IndexOf("RAM "u8);
        byte[] bad = (byte[])good.Clone();
        int firstPageNumber = ramAt + 4 + 2 + 4 + 4 + 4;
        BitConverter.TryWriteBytes(bad.AsSpan(firstPageNumber), 0xFFFF_FFF0u);
        using var m = Build(0);
        var before = Observe(m);
        var e = Assert.Throws<InvalidDataException>(() => m.RestoreState(new StateReader(bad)));
        Assert.Contains("beyond the end of memory", e.Message);
        AssertUnchanged(before, m, "bad RAM page number");

        // The same page twice.
        byte[] twice = (byte[])good.Clone();
        int second = firstPageNumber + 4 + 4096;
        Array.Copy(twice, firstPageNumber, twice, second, 4);
        var e2 = Assert.Throws<InvalidDataException>(() => m.RestoreState(new StateReader(twice)));
        Assert.Contains("twice", e2.Message);
        AssertUnchanged(before, m, "duplicate RAM page");

        // And the untouched state restores.
        m.RestoreState(new StateReader(good));
        Assert.Equal(source.ComputeDigest(), m.ComputeDigest());
    }

    private static byte[] Section(IPersistent component)
    {
        var w = new StateWriter();
        component.Save(w);
        return w.ToArray();
    }

    /// <summary>Each device on its own: a value the device could never hold is refused and changes nothing.</summary>
    [Theory]
    [InlineData("UART", 0, (byte)17)]    // more bytes than the FIFO
    [InlineData("UART", 5, (byte)0xF0)]  // IER (after the count and 4 FIFO bytes): bits the register masks off
    [InlineData("CLNT", 0, (byte)5)]     // msip is one bit
    [InlineData("PLIC", 4 + 4 * 10, (byte)9)] // priority above 7
    [InlineData("BALN", 12, (byte)9)]    // status no command returns
    public void A_device_refuses_an_impossible_value_and_keeps_its_state(string tag, int fieldOffset, byte value)
    {
        using var m = Build(0);
        using var other = Build(1);
        IPersistent Pick(Machine x) => tag switch { "UART" => x.Uart, "CLNT" => x.Clint, "PLIC" => x.Plic, _ => x.Balloon };
        byte[] section = Section(Pick(other));
        section[10 + fieldOffset] = value; // after tag, version and length
        var before = Observe(m);
        byte[] own = Section(Pick(m));
        Assert.Throws<InvalidDataException>(() => Pick(m).Restore(new StateReader(section)));
        Assert.Equal(own, Section(Pick(m)));
        AssertUnchanged(before, m, tag);
        // Truncated inside its fields: refused, nothing changed either.
        byte[] cut = Section(Pick(other))[..^1];
        BitConverter.TryWriteBytes(cut.AsSpan(6), (uint)(cut.Length - 10));
        Assert.Throws<InvalidDataException>(() => Pick(m).Restore(new StateReader(cut)));
        AssertUnchanged(before, m, tag + " truncated");
    }
}
