using LiveMigration.Guest;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>The setup carries the machine's identity; a destination that could not run the guest bit-exactly refuses before any page moves.</summary>
public sealed class HandshakeTests(ITestOutputHelper output)
{
    public static TheoryData<string, string> Mismatches() => new()
    {
        { "isa", "the source's ISA is rv64gc" },
        { "ram-base", "RAM at 0x40000000 on the source" },
        { "digest", "state digest version 99 on the source" },
        { "section-version", "state section 'CPU ' is version 99 on the source" },
        { "extra-device", "the devices differ" },
        { "engine", "migration engine 99 on the source" },
    };

    [Theory]
    [MemberData(nameof(Mismatches))]
    public void A_machine_the_destination_cannot_run_is_refused_before_any_page_moves(string what, string expected)
    {
        using var hosts = new Hosts(output, configure: o => o with
        {
            SentIdentity = id =>
            {
                var m = id.Clone();
                switch (what)
                {
                    case "isa": m.Isa = "rv64gc"; break;
                    case "ram-base": m.RamBase = 0x4000_0000; break;
                    case "digest": m.DigestVersion = 99; break;
                    case "section-version": m.Sections.Single(s => s.Tag == "CPU ").Version = 99; break;
                    case "extra-device": m.Sections.Add(new StateSectionVersion { Tag = "VBLK", Version = 1 }); break;
                    case "engine": m.EngineVersion = 99; break;
                }
                return m;
            },
        });
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf("idle_forever"), 16 << 20, "idle_forever");
        var r = hosts.Migrate("g", hosts.A, hosts.B, "stopcopy");
        Assert.False(r.Success);
        Assert.StartsWith("destination refused: ", r.Error);
        Assert.Contains(expected, r.Error);
        Assert.DoesNotContain('\n', r.Error);
        Assert.Equal(0UL, r.BytesCheckpoint); // not one page moved
        Assert.Empty(hosts.B.Status().Guests);
        Assert.Equal(GuestStatus.Running, hosts.A.FindInstance("g")!.State);
    }

    [Fact]
    public void The_identity_lists_every_state_section_and_matches_itself()
    {
        using var machine = new Machine(new MachineConfig { MemorySize = 16 << 20 }, NullHostPort.Instance);
        var id = MachineIdentities.Of(machine);
        Assert.Equal(MachineIdentities.Sections(machine.SaveDeviceState()).Select(s => s.Tag), id.Sections.Select(s => s.Tag));
        Assert.Contains(id.Sections, s => s.Tag == "CPU " && s.Version >= 1);
        Assert.True(id.Sections.Count >= 5); // CPU and the devices
        Assert.Equal(Machine.DigestVersion, id.DigestVersion);
        Assert.Equal(machine.Memory.Base, id.RamBase);
        Assert.Null(MachineIdentities.Mismatch(id, id.Clone()));
        var older = id.Clone();
        older.Sections[0].Version = 1; // an older section version is readable here
        Assert.Null(MachineIdentities.Mismatch(id, older));
        Assert.Contains("older build", MachineIdentities.Mismatch(id, null));
    }
}
