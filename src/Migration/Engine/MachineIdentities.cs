using System.Buffers.Binary;
using System.Text;
using LiveMigration.Guest;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Migration.Protocol;
using LiveMigration.Trace;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// What must match between two hosts before a single page moves (sent in <see cref="MigrateSetup"/>):
/// ISA, RAM base and size, the digest's version, the version of every saved state section, and
/// the engine's protocol version. A mismatch is refused with one line naming what differs.
/// </summary>
internal static class MachineIdentities
{
    public static MachineIdentity Of(Machine machine)
    {
        var id = new MachineIdentity
        {
            Isa = TraceHeaders.Isa, RamBase = machine.Memory.Base, MemorySize = machine.Config.MemorySize,
            PageCount = (uint)machine.Memory.PageCount, DigestVersion = Machine.DigestVersion, EngineVersion = Frame.ProtocolVersion,
            VirtioDevices = (uint)machine.Config.Virtio,
        };
        id.Sections.AddRange(BuildSections.GetOrAdd(machine.Config.Virtio, TemplateSections));
        if (machine.Disk is { } disk) id.Disk = new DiskIdentity { Length = (ulong)disk.Length, ReadOnly = disk.ReadOnly, BaseIdentity = disk.BaseIdentity };
        return id;
    }

    /// <summary>The configuration the destination builds from the source's identity.</summary>
    public static MachineConfig Config(MigrateSetup setup) =>
        new() { MemorySize = setup.MemorySize, Virtio = (VirtioDevices)(setup.Machine?.VirtioDevices ?? 0) & VirtioBus.KnownDevices };

    /// <summary>
    /// The section list is this build's, the same for every machine of a device set: read once from an
    /// idle machine (a running guest's state may not be saved from another thread).
    /// </summary>
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<VirtioDevices, StateSectionVersion[]> BuildSections = new();

    private static StateSectionVersion[] TemplateSections(VirtioDevices virtio)
    {
        using var template = new Machine(new MachineConfig { MemorySize = 1 << 20, Virtio = virtio }, NullHostPort.Instance, compileBlocks: false);
        return [.. Sections(template.SaveDeviceState()).Select(s => new StateSectionVersion { Tag = s.Tag, Version = s.Version })];
    }

    /// <summary>The top-level sections of a saved state: tag (4 ASCII bytes), version (u16), length (u32), body.</summary>
    public static List<(string Tag, uint Version)> Sections(ReadOnlySpan<byte> state)
    {
        var list = new List<(string, uint)>();
        int at = 0;
        while (at + 10 <= state.Length)
        {
            string tag = Encoding.ASCII.GetString(state.Slice(at, 4));
            ushort version = BinaryPrimitives.ReadUInt16LittleEndian(state[(at + 4)..]);
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(state[(at + 6)..]);
            list.Add((tag, version));
            at += 10 + (int)Math.Min(length, (uint)(state.Length - at - 10));
        }
        return list;
    }

    /// <summary>Why a guest of <paramref name="source"/> cannot run on <paramref name="local"/>, or null when it can.</summary>
    public static string? Mismatch(MachineIdentity local, MachineIdentity? source)
    {
        if (source == null) return "the source sent no machine identity (a peer of an older build)";
        if (source.Isa != local.Isa) return $"machine mismatch: the source's ISA is {source.Isa}, this host runs {local.Isa}";
        if (source.RamBase != local.RamBase) return $"machine mismatch: RAM at 0x{source.RamBase:x} on the source, 0x{local.RamBase:x} here";
        if (source.MemorySize != local.MemorySize || source.PageCount != local.PageCount)
            return $"machine mismatch: {source.PageCount} pages / {source.MemorySize} bytes of RAM on the source, {local.PageCount} / {local.MemorySize} here";
        if (source.DigestVersion != local.DigestVersion) return $"machine mismatch: state digest version {source.DigestVersion} on the source, {local.DigestVersion} here (the final digest could never match)";
        if (source.VirtioDevices != local.VirtioDevices)
            return $"machine mismatch: virtio devices '{(VirtioDevices)source.VirtioDevices}' on the source, '{(VirtioDevices)local.VirtioDevices}' here";
        if (source.EngineVersion != local.EngineVersion) return $"engine mismatch: migration engine {source.EngineVersion} on the source, {local.EngineVersion} here";
        for (int i = 0; i < Math.Max(source.Sections.Count, local.Sections.Count); i++)
        {
            var theirs = i < source.Sections.Count ? source.Sections[i] : null;
            var mine = i < local.Sections.Count ? local.Sections[i] : null;
            if (theirs?.Tag != mine?.Tag)
                return $"machine mismatch: the devices differ (state section {i + 1} is '{theirs?.Tag ?? "none"}' on the source, '{mine?.Tag ?? "none"}' here)";
            if (theirs!.Version > mine!.Version) return $"machine mismatch: state section '{theirs.Tag}' is version {theirs.Version} on the source; this host reads up to {mine.Version}";
        }
        return null;
    }
}
