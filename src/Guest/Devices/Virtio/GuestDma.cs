using LiveMigration.Guest.Memory;

namespace LiveMigration.Guest.Devices.Virtio;

/// <summary>
/// Device access to guest RAM. Every write goes through the memory's write barrier (dirty map,
/// copy-on-write snapshots, decoded-code invalidation), exactly as a hart store would; pages still
/// on their way in post-copy are fetched first. A range outside RAM is refused (false), never a
/// host exception: the device reports the error to the guest.
/// </summary>
public sealed class GuestDma(GuestMemory memory)
{
    private static readonly TimeSpan PageWait = TimeSpan.FromSeconds(30);

    public GuestMemory Memory => memory;

    public bool Read(ulong address, Span<byte> destination)
    {
        if (!Present(address, destination.Length)) return false;
        memory.Read(address, destination);
        return true;
    }

    public bool Write(ulong address, ReadOnlySpan<byte> data)
    {
        if (!Present(address, data.Length)) return false;
        memory.Write(address, data);
        return true;
    }

    public bool ReadU16(ulong address, out ushort value)
    {
        Span<byte> b = stackalloc byte[2];
        bool ok = Read(address, b);
        value = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(b);
        return ok;
    }

    public bool WriteU16(ulong address, ushort value)
    {
        Span<byte> b = stackalloc byte[2];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(b, value);
        return Write(address, b);
    }

    public bool WriteU32(ulong address, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        return Write(address, b);
    }

    private bool Present(ulong address, int length)
    {
        if (!memory.Contains(address, length)) return false;
        if (length == 0 || !memory.HasAbsentPages) return true;
        ulong offset = address - memory.Base;
        if (memory.EnsurePresent(offset, length)) return true;
        // Post-copy: the page is being fetched; a device cannot stall like a hart, so it waits.
        int first = (int)(offset >> GuestMemory.PageShift), last = (int)((offset + (ulong)length - 1) >> GuestMemory.PageShift);
        for (int page = first; page <= last; page++)
            if (memory.IsAbsent(page) && !memory.WaitForPage(page, PageWait)) return false;
        return true;
    }
}
