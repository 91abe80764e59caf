namespace LiveMigration.Guest;

/// <summary>What must match between two hosts for a state to move from one to the other.</summary>
public sealed record MachineConfig
{
    public const ulong DefaultMemorySize = 128UL << 20;

    /// <summary>The largest DRAM a machine may have (and a checkpoint or trace may ask for).</summary>
    public const ulong MaxMemorySize = 16UL << 30;

    public ulong MemorySize { get; init; } = DefaultMemorySize;

    /// <summary>
    /// virtio-mmio devices. With any, the machine has QEMU virt's eight transports at 0x1000_1000
    /// (empty ones answer device ID 0); with none it has no transports, as the bare-metal machine always had.
    /// </summary>
    public Devices.Virtio.VirtioDevices Virtio { get; init; }

    /// <summary>Why <paramref name="size"/> cannot be a machine's DRAM size, or null when it can.</summary>
    public static string? MemorySizeProblem(ulong size) =>
        size == 0 ? "memory size is 0"
        : size % 4096 != 0 ? $"memory size {size} is not a multiple of 4 KiB"
        : size > MaxMemorySize ? $"memory size {size} is larger than 16 GiB"
        : null;

    /// <summary>Parses sizes such as 128M, 1G, 65536, 64KiB or 128MB; nothing else (no inner spaces, no stray letters).</summary>
    public static ulong ParseSize(string text)
    {
        var m = System.Text.RegularExpressions.Regex.Match(text.Trim().ToUpperInvariant(), @"^([0-9]{1,20})(?:([KMG])(?:IB|B)?|B)?\z");
        if (!m.Success) throw new FormatException($"'{text}' is not a size (examples: 128M, 1G, 65536)");
        string t = m.Groups[1].Value + m.Groups[2].Value;
        ulong mult = 1;
        if (t.EndsWith('K')) mult = 1UL << 10;
        else if (t.EndsWith('M')) mult = 1UL << 20;
        else if (t.EndsWith('G')) mult = 1UL << 30;
        if (mult != 1) t = t[..^1];
        if (!ulong.TryParse(t, out ulong n) || n == 0)
            throw new FormatException($"'{text}' is not a size (examples: 128M, 1G, 65536)");
        if (n > ulong.MaxValue / mult) throw new FormatException($"memory size {text} is larger than 16 GiB");
        ulong size = n * mult;
        if (size % 4096 != 0) throw new FormatException($"memory size {text} is not a multiple of 4 KiB");
        if (size > MaxMemorySize) throw new FormatException($"memory size {text} is larger than 16 GiB");
        return size;
    }
}
