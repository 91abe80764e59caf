using System.Runtime.InteropServices;

namespace LiveMigration.Guest.Memory;

/// <summary>
/// Zeroed host memory for guest RAM and the TLB, on 2 MiB transparent huge pages where Linux offers
/// them (QEMU asks the same for its RAM blocks). Random stores over a 64 MiB working set otherwise
/// miss the host's own TLB on almost every access. Pages are still given out lazily: an untouched
/// guest costs nothing, a touched region costs its 2 MiB pages.
/// </summary>
internal static unsafe partial class HostPages
{
    private const nuint HugePage = 2 << 20;
    private const int ProtReadWrite = 0x1 | 0x2, MapPrivateAnonymous = 0x02 | 0x20, MadvHugepage = 14;
    private static readonly nint MapFailed = -1;

    /// <summary>Zeroed memory of <paramref name="size"/> bytes; free it with <see cref="Free"/> and the same size.</summary>
    public static byte* Allocate(nuint size)
    {
        if (!OperatingSystem.IsLinux() || size < HugePage) return (byte*)NativeMemory.AllocZeroed(size);
        // Over-allocate by one huge page and trim both ends, so the region starts on a 2 MiB boundary.
        nuint length = Round(size);
        nint raw = mmap(0, length + HugePage, ProtReadWrite, MapPrivateAnonymous, -1, 0);
        if (raw == MapFailed) throw new OutOfMemoryException($"cannot map {size} bytes of host memory");
        nuint start = ((nuint)raw + HugePage - 1) & ~(HugePage - 1);
        nuint head = start - (nuint)raw, tail = HugePage - head;
        if (head != 0) munmap(raw, head);
        if (tail != 0) munmap((nint)(start + length), tail);
        madvise((nint)start, length, MadvHugepage); // advice only: without THP the pages stay 4 KiB
        return (byte*)start;
    }

    public static void Free(byte* memory, nuint size)
    {
        if (!OperatingSystem.IsLinux() || size < HugePage) NativeMemory.Free(memory);
        else munmap((nint)memory, Round(size));
    }

    private static nuint Round(nuint size) => (size + HugePage - 1) & ~(HugePage - 1);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint mmap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int munmap(nint address, nuint length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int madvise(nint address, nuint length, int advice);
}
