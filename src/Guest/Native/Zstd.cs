using System.Runtime.InteropServices;

namespace LiveMigration.Guest.Native;

/// <summary>One-shot zstd through Debian's libzstd1 (no managed port is available here).</summary>
public static unsafe partial class Zstd
{
    private const string Lib = "libzstd.so.1";

    [LibraryImport(Lib, EntryPoint = "ZSTD_compressBound")]
    private static partial nuint NativeBound(nuint srcSize);
    [LibraryImport(Lib, EntryPoint = "ZSTD_compress")]
    private static partial nuint NativeCompress(void* dst, nuint dstCapacity, void* src, nuint srcSize, int level);
    [LibraryImport(Lib, EntryPoint = "ZSTD_decompress")]
    private static partial nuint NativeDecompress(void* dst, nuint dstCapacity, void* src, nuint srcSize);
    [LibraryImport(Lib, EntryPoint = "ZSTD_isError")]
    private static partial uint NativeIsError(nuint code);
    [LibraryImport(Lib, EntryPoint = "ZSTD_getFrameContentSize")]
    private static partial ulong NativeFrameContentSize(void* src, nuint srcSize);

    public const int DefaultLevel = 3;

    public static int CompressBound(int length) { EnsureLoaded(); return (int)NativeBound((nuint)length); }

    /// <summary>Compresses into <paramref name="destination"/>; returns bytes written.</summary>
    public static int Compress(ReadOnlySpan<byte> source, Span<byte> destination, int level = DefaultLevel)
    {
        nuint n;
        fixed (byte* s = source) fixed (byte* d = destination)
            { EnsureLoaded(); n = NativeCompress(d, (nuint)destination.Length, s, (nuint)source.Length, level); }
        if (NativeIsError(n) != 0) throw new InvalidDataException("zstd: compression failed (destination too small?)");
        return (int)n;
    }

    public static byte[] Compress(ReadOnlySpan<byte> source, int level = DefaultLevel)
    {
        var buffer = new byte[CompressBound(source.Length)];
        int n = Compress(source, buffer, level);
        return buffer.AsSpan(0, n).ToArray();
    }

    /// <summary>Decompresses a whole frame into exactly <paramref name="destination"/>; returns bytes written.</summary>
    public static int Decompress(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        nuint n;
        fixed (byte* s = source) fixed (byte* d = destination)
            { EnsureLoaded(); n = NativeDecompress(d, (nuint)destination.Length, s, (nuint)source.Length); }
        if (NativeIsError(n) != 0) throw new InvalidDataException("zstd: corrupt or oversized compressed data");
        return (int)n;
    }

    /// <summary>Decompressed size recorded in the frame header, or -1 when absent or invalid.</summary>
    public static long FrameContentSize(ReadOnlySpan<byte> source)
    {
        ulong n;
        EnsureLoaded();
        fixed (byte* s = source) n = NativeFrameContentSize(s, (nuint)source.Length);
        return n >= 0xFFFF_FFFF_FFFF_FFFEUL ? -1 : (long)n;
    }

    public static byte[] Decompress(ReadOnlySpan<byte> source, int maxLength)
    {
        long size = FrameContentSize(source);
        if (size < 0 || size > maxLength) throw new InvalidDataException("zstd: frame size missing or too large");
        var buffer = new byte[size];
        int n = Decompress(source, buffer);
        if (n != size) throw new InvalidDataException("zstd: frame shorter than its header says");
        return buffer;
    }

    private static bool _loaded;

    /// <summary>Turns a missing libzstd into an error that names the Debian package.</summary>
    private static void EnsureLoaded()
    {
        if (_loaded) return;
        try { NativeBound(0); _loaded = true; }
        catch (DllNotFoundException e) { throw new NativeLibraryMissingException(Lib, "libzstd1", e); }
    }
}
