using System.Buffers.Binary;
using System.Diagnostics;
using Google.Protobuf;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Cli.Hosting;

/// <summary>
/// Runs every strategy once between two private hosts in this process, so the first real migration
/// does not pay for JIT compilation, native library loading and first-use setup in its downtime (a
/// cold first post-copy switchover measured ~50 ms, a warm one ~1–3 ms). The hosts and their guest
/// are thrown away; only the warmed code stays. A long-running `lm host` is in this state after its
/// first migration anyway; this gets it there before the first one. It lives with the programs that
/// want it (`lm host`, `lm demo`, the benches link this file), not in the library.
/// </summary>
public static class MigrationWarmUp
{
    /// <summary>
    /// Migrates a throw-away guest through every strategy; returns the strategies that failed. No
    /// state is kept: a host (or a bench) calls it once, before its first real migration.
    /// </summary>
    public static IReadOnlyList<string> Run(Action<string>? log = null)
    {
        var failures = new List<string>();
        var clock = Stopwatch.StartNew();
        try
        {
            using var a = new GuestHost(new HostOptions());
            using var b = new GuestHost(new HostOptions());
            a.StartGuest(new StartGuest { Name = "warm-up", Elf = ByteString.CopyFrom(Image()), MemorySize = 1 << 20, ImageName = "warm-up" });
            GuestHost from = a, to = b;
            // Every strategy, then the two whose switchover paths differ most once more, warm.
            foreach (var strategy in Strategies.All.Concat([Strategy.Log, Strategy.Postcopy]))
            {
                var r = from.Migrate(new MigrateCommand { Name = "warm-up", Target = to.Address, Strategy = strategy });
                if (!r.Success) { failures.Add($"{Strategies.Name(strategy)}: {r.Error}"); log?.Invoke($"warm-up: {Strategies.Name(strategy)} failed ({r.Error}); carrying on"); continue; }
                (from, to) = (to, from);
            }
        }
        catch (Exception e) when (e is IOException or HostException or InvalidOperationException)
        {
            failures.Add(e.Message);
            log?.Invoke($"warm-up stopped early: {e.Message}"); // only speed is at stake
        }
        log?.Invoke($"migration paths warmed in {clock.Elapsed.TotalMilliseconds:F0} ms");
        return failures;
    }

    /// <summary>
    /// A 1 MiB guest that loops forever: reads the CLINT's mtime (a logged input), stores it to RAM,
    /// then counts down 100,000 (so the log stays small). Hand-assembled RV64IMAC:
    /// auipc a0,0x10; lui a1,0x200c; loop: ld a2,-8(a1); c.sd a2,0(a0); c.lui t0,0x18;
    /// addiw t0,t0,1696; inner: c.addi t0,-1; bnez t0,inner; c.j loop.
    /// </summary>
    private static readonly byte[] Code =
    [
        0x17, 0x05, 0x01, 0x00, 0xb7, 0xc5, 0x00, 0x02, 0x03, 0xb6, 0x85, 0xff, 0x10, 0xe1, 0xe1, 0x62,
        0x9b, 0x82, 0x02, 0x6a, 0xfd, 0x12, 0xe3, 0x9f, 0x02, 0xfe, 0xfd, 0xb7,
    ];

    /// <summary>The code above as an ELF64 RISC-V executable with one PT_LOAD segment at 0x8000_0000.</summary>
    private static byte[] Image()
    {
        const int EhSize = 64, PhSize = 56;
        const ulong Entry = 0x8000_0000;
        var elf = new byte[EhSize + PhSize + Code.Length];
        var s = elf.AsSpan();
        s[0] = 0x7f; s[1] = (byte)'E'; s[2] = (byte)'L'; s[3] = (byte)'F';
        s[4] = 2; s[5] = 1; s[6] = 1; // ELFCLASS64, little-endian, version 1
        BinaryPrimitives.WriteUInt16LittleEndian(s[16..], 2);        // ET_EXEC
        BinaryPrimitives.WriteUInt16LittleEndian(s[18..], 243);      // EM_RISCV
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], 1);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], Entry);
        BinaryPrimitives.WriteUInt64LittleEndian(s[32..], EhSize);   // e_phoff
        BinaryPrimitives.WriteUInt16LittleEndian(s[52..], EhSize);
        BinaryPrimitives.WriteUInt16LittleEndian(s[54..], PhSize);
        BinaryPrimitives.WriteUInt16LittleEndian(s[56..], 1);        // e_phnum
        var ph = s[EhSize..];
        BinaryPrimitives.WriteUInt32LittleEndian(ph, 1);             // PT_LOAD
        BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], 5);        // R+X
        BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], EhSize + PhSize);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[16..], Entry);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], Entry);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], (ulong)Code.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], (ulong)Code.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[48..], 4);
        Code.CopyTo(s[(EhSize + PhSize)..]);
        return elf;
    }
}
