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

    private static byte[] Encode(ReadOnlySpan<byte> state, ulong icount, ulong digest, ulong memorySize)
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
        ulong raw = BinaryPrimitives.ReadUInt64LittleEndian(file[40..]);
        if (raw > 64UL << 30) throw new TraceFormatException(40, "checkpoint state length is absurd");
        return new CheckpointInfo(version, BinaryPrimitives.ReadUInt64LittleEndian(file[16..]), BinaryPrimitives.ReadUInt64LittleEndian(file[24..]),
            BinaryPrimitives.ReadUInt64LittleEndian(file[32..]), (long)raw, file.Length);
    }

    /// <summary>Decompresses and checks the machine state held in a checkpoint.</summary>
    public static byte[] ReadState(ReadOnlySpan<byte> file, out CheckpointInfo info)
    {
        info = ReadInfo(file);
        uint blockSize = BinaryPrimitives.ReadUInt32LittleEndian(file[12..]);
        if (blockSize == 0 || blockSize > 64 << 20) throw new TraceFormatException(12, "bad checkpoint block size");
        var state = new byte[info.RawLength];
        int pos = HeaderSize;
        long at = 0;
        while (at < info.RawLength)
        {
            if (file.Length - pos < 4) throw new TraceTruncatedException(pos, "checkpoint ends before its last block");
            int n = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(file[pos..]), int.MaxValue);
            if (n > file.Length - pos - 4) throw new TraceTruncatedException(pos, "checkpoint block runs past the end of the data");
            var block = file.Slice(pos + 4, n);
            int want = (int)Math.Min(blockSize, info.RawLength - at);
            if (Zstd.FrameContentSize(block) != want) throw new TraceFormatException(pos, "checkpoint block has the wrong size");
            try { Zstd.Decompress(block, state.AsSpan((int)at, want)); }
            catch (InvalidDataException e) { throw new TraceFormatException(pos, $"checkpoint block: {e.Message}"); }
            at += want;
            pos += 4 + n;
        }
        if (pos != file.Length) throw new TraceFormatException(pos, "bytes after the last checkpoint block");
        if (XxHash3.HashToUInt64(state) != BinaryPrimitives.ReadUInt64LittleEndian(file[48..])) throw new TraceFormatException(HeaderSize, "checkpoint state checksum mismatch");
        return state;
    }

    /// <summary>Restores a checkpoint into <paramref name="machine"/> and checks the resulting state digest.</summary>
    public static CheckpointInfo Restore(Machine machine, ReadOnlySpan<byte> file)
    {
        var state = ReadState(file, out var info);
        if (info.MemorySize != machine.Config.MemorySize)
            throw new InvalidDataException($"checkpoint is of a machine with {info.MemorySize >> 20} MiB of RAM; this one has {machine.Config.MemorySize >> 20} MiB");
        machine.RestoreState(new StateReader(state));
        ulong digest = machine.ComputeDigest();
        if (digest != info.Digest || machine.Icount != info.Icount)
            throw new InvalidDataException($"restored checkpoint has digest 0x{digest:x16} at icount {machine.Icount}; its header says 0x{info.Digest:x16} at {info.Icount}");
        return info;
    }

    /// <summary>Creates a machine of the checkpoint's configuration and restores it.</summary>
    public static Machine Load(ReadOnlySpan<byte> file, IHostPort port)
    {
        var info = ReadInfo(file);
        var machine = new Machine(new MachineConfig { MemorySize = info.MemorySize }, port);
        try { Restore(machine, file); }
        catch { machine.Dispose(); throw; }
        return machine;
    }
}
