using System.IO.Hashing;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Virtio.Block;

/// <summary>
/// The disk's contents in a saved machine: the base image's identity and the overlay (the blocks
/// written since the disk was opened), after the RAM section of a machine with virtio-blk. A
/// restore needs the same base image and replaces the overlay. Layout (section "DISK"):
/// <code>
/// block size u32, blocks u64, base identity u64, content digest u64, entries u64,
/// entries × { block u64, kind u8 (0 zero, 1 data), data[4096] when kind 1 }   (ascending blocks)
/// </code>
/// </summary>
public static class DiskState
{
    // Bump when a saved field is added or its meaning changes; readers accept 1..current.
    private const ushort Version = 1;
    private const byte KindZero = 0, KindData = 1;

    /// <summary>Writes the contents of <paramref name="snapshot"/>, or of <paramref name="disk"/> as it is now (a stopped machine).</summary>
    public static void Save(StateWriter w, Disk? disk, DiskSnapshot? snapshot)
    {
        if (snapshot == null) disk?.EnsureAllPresent(); // post-copy: blocks still on their way are part of the state
        w.BeginSection("DISK", Version);
        w.U32(Disk.BlockSize);
        long blocks = snapshot?.BlockCount ?? disk?.BlockCount ?? 0;
        w.U64((ulong)blocks);
        w.U64(disk?.BaseIdentity ?? 0);
        w.U64(snapshot?.ContentDigest ?? disk?.ContentDigest ?? 0);
        long countAt = w.Stream.Position;
        w.U64(0);
        ulong count = 0;
        var block = new byte[Disk.BlockSize];
        for (long b = 0; b < blocks; b++)
        {
            if (snapshot != null ? !snapshot.InOverlay(b) : !disk!.InOverlay(b)) continue;
            if (snapshot != null) snapshot.ReadBlock(b, block); else disk!.ReadBlock(b, block);
            w.U64((ulong)b);
            bool zero = !block.AsSpan().ContainsAnyExcept((byte)0);
            w.U8(zero ? KindZero : KindData);
            if (!zero) w.Bytes(block);
            count++;
        }
        long end = w.Stream.Position;
        w.Stream.Position = countAt;
        w.U64(count);
        w.Stream.Position = end;
        w.EndSection();
    }

    /// <summary>Reads and checks the section against <paramref name="disk"/> (same base, entries in range, the digest they give); the action applies it.</summary>
    /// <param name="atSavedContents">
    /// The disk already holds the saved contents (a snapshot of the disk taken with the state, as a
    /// fleet checkpoint keeps): its digest must be the saved one, and the overlay is not applied.
    /// </param>
    public static Action Prepare(StateReader r, Disk? disk, bool atSavedContents = false)
    {
        r.OpenSection("DISK", 1, Version);
        uint blockSize = r.U32();
        ulong blocks = r.U64(), identity = r.U64(), digest = r.U64(), count = r.U64();
        if (blockSize != Disk.BlockSize) throw new InvalidDataException($"saved disk has {blockSize}-byte blocks; this build uses {Disk.BlockSize}");
        if (blocks != (ulong)(disk?.BlockCount ?? 0))
            throw new InvalidDataException($"saved disk has {blocks} blocks; this machine's has {disk?.BlockCount ?? 0}");
        if (disk == null) { r.CloseSection(); return () => { }; }
        if (atSavedContents)
        {
            SkipEntries(r, count);
            r.CloseSection();
            if (disk.ContentDigest != digest)
                throw new InvalidDataException($"the disk holds contents with digest 0x{disk.ContentDigest:x16}; the state saved with it expects 0x{digest:x16}");
            return () => { };
        }
        if (identity != disk.BaseIdentity)
            throw new InvalidDataException($"saved disk is relative to image 0x{identity:x16}; this machine's drive is image 0x{disk.BaseIdentity:x16}");
        if (count > blocks) throw new InvalidDataException($"saved disk holds {count} blocks of {blocks}");
        var overlay = new Dictionary<long, byte[]>((int)count);
        long previous = -1;
        for (ulong i = 0; i < count; i++)
        {
            ulong b = r.U64();
            byte kind = r.U8();
            if (b >= blocks || (long)b <= previous) throw new InvalidDataException($"saved disk names block {b} out of order or beyond the end");
            if (kind is not (KindZero or KindData)) throw new InvalidDataException($"saved disk block {b} has an unknown kind {kind}");
            var data = new byte[Disk.BlockSize];
            if (kind == KindData) r.Bytes(Disk.BlockSize).CopyTo(data);
            overlay[(long)b] = data;
            previous = (long)b;
        }
        r.CloseSection();
        // The digest the entries give over the base must be the one saved: checked before anything changes.
        ulong expect = 0;
        var bases = disk.BaseBlockHashes;
        for (long b = 0; b < disk.BlockCount; b++)
            expect += Disk.Mix(b, overlay.TryGetValue(b, out var d) ? XxHash3.HashToUInt64(d) : bases[(int)b]);
        if (expect != digest) throw new InvalidDataException($"saved disk contents give digest 0x{expect:x16}, not the 0x{digest:x16} saved with them");
        return () => disk.ApplyOverlay(overlay);
    }

    private static void SkipEntries(StateReader r, ulong count)
    {
        for (ulong i = 0; i < count; i++)
        {
            r.U64();
            byte kind = r.U8();
            if (kind == KindData) r.Bytes(Disk.BlockSize);
            else if (kind != KindZero) throw new InvalidDataException($"saved disk entry {i} has an unknown kind {kind}");
        }
    }
}
