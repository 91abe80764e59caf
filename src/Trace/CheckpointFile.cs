using System.Buffers.Binary;
using LiveMigration.Guest;
using System.IO.Hashing;
using LiveMigration.Trace.Compression;
using LiveMigration.Guest.State;

namespace LiveMigration.Trace;

/// <summary>What a checkpoint file's header says.</summary>
public readonly record struct CheckpointInfo(ushort Version, ulong Icount, ulong Digest, ulong MemorySize, long RawLength, long FileLength);

/// <summary>
/// A standalone, versioned checkpoint of a whole machine (FORMAT.md, "Checkpoint files"): a 64-byte
/// header, then the machine state (<see cref="Machine.SaveState(StateWriter)"/>, which skips zero
/// pages) cut into blocks of at most 1 MiB, each a zstd frame preceded by its u32 length. The same
/// bytes are embedded in a trace header or a checkpoint frame.
/// </summary>
public static class CheckpointFile
{
    /// <summary>Bump on any change to the header or block layout; readers accept 1..Version.</summary>
    public const ushort Version = 1;
    public const int HeaderSize = 64;
    public const int BlockSize = 1 << 20;
    public static ReadOnlySpan<byte> Magic => "LMCKPT\0\0"u8;

    /// <summary>Checkpoints a stopped machine.</summary>
    public static byte[] Create(Machine machine)
    {
        var w = new StateWriter();
        machine.SaveState(w);
        return Encode(w.Stream.GetBuffer().AsSpan(0, (int)w.Stream.Length), machine.Icount, machine.ComputeDigest(), machine.Config.MemorySize);
    }

    /// <summary>Checkpoints a copy-on-write snapshot; the machine may keep running meanwhile.</summary>
    public static byte[] Create(MachineSnapshot snapshot, MachineConfig config)
    {
        var w = new StateWriter();
        snapshot.Save(w);
        return Encode(w.Stream.GetBuffer().AsSpan(0, (int)w.Stream.Length), snapshot.Icount, snapshot.Digest, config.MemorySize);
    }

    public static void Save(Machine machine, string path) => File.WriteAllBytes(path, Create(machine));

    /// <summary>The file around raw state bytes (tests forge files of any content with it).</summary>
    internal static byte[] Encode(ReadOnlySpan<byte> state, ulong icount, ulong digest, ulong memorySize)
    {
        using var ms = new MemoryStream();
        var header = new byte[HeaderSize];
        ms.Write(header);
        byte[] block = new byte[4 + Zstd.CompressBound(BlockSize)];
        for (int at = 0; at < state.Length; at += BlockSize)
        {
            var raw = state.Slice(at, Math.Min(BlockSize, state.Length - at));
            int n = Zstd.Compress(raw, block.AsSpan(4));
            BinaryPrimitives.WriteUInt32LittleEndian(block, (uint)n);
            ms.Write(block, 0, 4 + n);
        }
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(8), Version);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(10), 0);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(12), BlockSize);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(16), icount);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(24), digest);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(32), memorySize);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(40), (ulong)state.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(48), XxHash3.HashToUInt64(state));
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(56), XxHash3.HashToUInt64(header.AsSpan(0, 56)));
        var bytes = ms.ToArray();
        header.CopyTo(bytes, 0);
        return bytes;
    }

    public static CheckpointInfo ReadInfo(ReadOnlySpan<byte> file)
    {
        if (file.Length < HeaderSize)
        {
            if (!file.SequenceEqual(Magic[..Math.Min(file.Length, Magic.Length)])) throw new TraceFormatException(0, "not a LiveMigration checkpoint (bad magic)");
            throw new TraceTruncatedException(file.Length, "checkpoint ends inside its header");
        }
        if (!file[..8].SequenceEqual(Magic)) throw new TraceFormatException(0, "not a LiveMigration checkpoint (bad magic)");
        if (BinaryPrimitives.ReadUInt64LittleEndian(file[56..]) != XxHash3.HashToUInt64(file[..56])) throw new TraceFormatException(0, "checkpoint header checksum mismatch");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(file[8..]);
        if (version is < 1 or > Version) throw new TraceFormatException(8, $"checkpoint version {version}; this build reads 1..{Version}");
        ulong memory = BinaryPrimitives.ReadUInt64LittleEndian(file[32..]);
        if (MachineConfig.MemorySizeProblem(memory) is { } problem) throw new TraceFormatException(32, $"checkpoint {problem}");
        ulong raw = BinaryPrimitives.ReadUInt64LittleEndian(file[40..]);
        ulong most = MaxStateLength(memory);
        if (raw > most) throw new TraceFormatException(40, $"checkpoint state length {raw} is more than a machine of {memory >> 10} KiB can save ({most})");
        if (raw > (ulong)Array.MaxLength) throw new TraceFormatException(40, $"checkpoint state length {raw} is more than this build reads ({Array.MaxLength} bytes)");
        return new CheckpointInfo(version, BinaryPrimitives.ReadUInt64LittleEndian(file[16..]), BinaryPrimitives.ReadUInt64LittleEndian(file[24..]),
            memory, (long)raw, file.Length);
    }

    /// <summary>
    /// An upper bound on <see cref="Machine.SaveState(StateWriter)"/>'s length: a few KiB of CPU and
    /// device sections plus, per page, its stored copy (4 + 4096 bytes) and a balloon range (8 bytes),
    /// plus a disk overlay.
    /// </summary>
    private static ulong MaxStateLength(ulong memorySize) => (64 << 10) + memorySize / 4096 * (4 + 4096 + 8) + MaxDiskSection;

    /// <summary>A machine with virtio-blk also saves its disk overlay (the blocks written since its image was opened): at most this much.</summary>
    public const ulong MaxDiskSection = 1UL << 30;

    /// <summary>Decompresses and checks the machine state held in a checkpoint.</summary>
    public static byte[] ReadState(ReadOnlySpan<byte> file, out CheckpointInfo info)
    {
        info = ReadInfo(file);
        uint blockSize = BinaryPrimitives.ReadUInt32LittleEndian(file[12..]);
        if (blockSize == 0 || blockSize > 64 << 20) throw new TraceFormatException(12, "bad checkpoint block size");
        // Walk the block list first: the state buffer is allocated only once every block is there.
        WalkBlocks(file, blockSize, info, null);
        var state = new byte[info.RawLength];
        WalkBlocks(file, blockSize, info, state);
        if (XxHash3.HashToUInt64(state) != BinaryPrimitives.ReadUInt64LittleEndian(file[48..])) throw new TraceFormatException(HeaderSize, "checkpoint state checksum mismatch");
        return state;
    }

    /// <summary>Checks every block's length and recorded size; decompresses them into <paramref name="state"/> when given.</summary>
    private static void WalkBlocks(ReadOnlySpan<byte> file, uint blockSize, CheckpointInfo info, byte[]? state)
    {
        int pos = HeaderSize;
        for (long at = 0; at < info.RawLength; at += blockSize)
        {
            if (file.Length - pos < 4) throw new TraceTruncatedException(pos, "checkpoint ends before its last block");
            uint stored = BinaryPrimitives.ReadUInt32LittleEndian(file[pos..]);
            if (stored > file.Length - pos - 4) throw new TraceTruncatedException(pos, "checkpoint block runs past the end of the data");
            var block = file.Slice(pos + 4, (int)stored);
            int want = (int)Math.Min(blockSize, info.RawLength - at);
            if (Zstd.FrameContentSize(block) != want) throw new TraceFormatException(pos, "checkpoint block has the wrong size");
            if (state != null)
            {
                try
                {
                    if (Zstd.Decompress(block, state.AsSpan((int)at, want)) != want) throw new TraceFormatException(pos, "checkpoint block is shorter than its recorded size");
                }
                catch (InvalidDataException e) { throw new TraceFormatException(pos, $"checkpoint block: {e.Message}"); }
            }
            pos += 4 + (int)stored;
        }
        if (pos != file.Length) throw new TraceFormatException(pos, "bytes after the last checkpoint block");
    }

    /// <summary>
    /// Restores a checkpoint into <paramref name="machine"/> and checks the resulting state digest.
    /// A checkpoint that fails any check, the digest included, leaves the machine as it was.
    /// </summary>
    public static CheckpointInfo Restore(Machine machine, ReadOnlySpan<byte> file)
    {
        var state = ReadState(file, out var info);
        CheckFits(info, machine);
        // The digest can only be checked on the restored state: keep the current one to go back to.
        var before = new StateWriter();
        machine.SaveState(before);
        try { Apply(machine, state, info); }
        catch (InvalidDataException)
        {
            machine.RestoreState(new StateReader(before.ToArray()));
            throw;
        }
        return info;
    }

    /// <summary>Creates a machine of the checkpoint's configuration and restores it.</summary>
    public static Machine Load(ReadOnlySpan<byte> file, IHostPort port, bool compileBlocks = true)
    {
        var state = ReadState(file, out var info);
        var machine = new Machine(MachineSection(state, info), port, compileBlocks);
        try { Apply(machine, state, info); }
        catch { machine.Dispose(); throw; }
        return machine;
    }

    /// <summary>As <see cref="Load(ReadOnlySpan{byte}, IHostPort, bool)"/>, with <paramref name="disk"/> inserted first (a machine with virtio-blk: its saved disk is relative to that image).</summary>
    /// <param name="diskAtSavedContents">The disk holds the contents saved with the state (a fleet checkpoint's disk snapshot): checked by digest, its overlay not applied.</param>
    public static Machine Load(ReadOnlySpan<byte> file, IHostPort port, Guest.Devices.Virtio.Block.Disk? disk, bool compileBlocks = true, bool diskAtSavedContents = false)
    {
        var state = ReadState(file, out var info);
        var machine = new Machine(MachineSection(state, info), port, compileBlocks);
        try
        {
            if (disk != null) machine.InsertDisk(disk);
            Apply(machine, state, info, diskAtSavedContents);
        }
        catch { machine.Dispose(); throw; }
        return machine;
    }

    /// <summary>The machine the state's MACH section describes, which must be the one the header names (checked before one is made).</summary>
    private static MachineConfig MachineSection(byte[] state, CheckpointInfo info)
    {
        MachineConfig config;
        try { config = Machine.ReadConfig(state); }
        catch (InvalidDataException e) { throw new TraceFormatException(HeaderSize, $"checkpoint state: {e.Message}"); }
        if (config.MemorySize != info.MemorySize) throw new TraceFormatException(HeaderSize, $"checkpoint header says {info.MemorySize} bytes of RAM, its state {config.MemorySize}");
        return config;
    }

    /// <summary>The configuration of the machine a checkpoint holds.</summary>
    public static MachineConfig ReadConfig(ReadOnlySpan<byte> file) => MachineSection(ReadState(file, out var info), info);

    private static void CheckFits(CheckpointInfo info, Machine machine)
    {
        if (info.MemorySize != machine.Config.MemorySize)
            throw new InvalidDataException($"checkpoint is of a machine with {info.MemorySize >> 20} MiB of RAM; this one has {machine.Config.MemorySize >> 20} MiB");
    }

    private static void Apply(Machine machine, byte[] state, CheckpointInfo info, bool diskAtSavedContents = false)
    {
        CheckFits(info, machine);
        machine.RestoreState(new StateReader(state), diskAtSavedContents);
        ulong digest = machine.ComputeDigest();
        if (digest != info.Digest || machine.Icount != info.Icount)
            throw new InvalidDataException($"restored checkpoint has digest 0x{digest:x16} at icount {machine.Icount}; its header says 0x{info.Digest:x16} at {info.Icount} (made before digest version {Machine.DigestVersion}?)");
    }
}
