using ZstdSharp;
using ZstdSharp.Unsafe;

namespace LiveMigration.Trace.Compression;

/// <summary>
/// One-shot zstd frames (ZstdSharp, a managed port of the reference library: its frames and
/// libzstd's are interchangeable). Every frame records its content size, which readers check
/// before they allocate. Errors are <see cref="InvalidDataException"/>s.
/// </summary>
public static unsafe class Zstd
{
    public const int DefaultLevel = 3;

    // A compression context costs ~1 MiB of tables to set up: keep one per thread, never per call.
    [ThreadStatic] private static Compressor? _compressor;
    [ThreadStatic] private static Decompressor? _decompressor;

    public static int CompressBound(int length) => Compressor.GetCompressBound(length);

    /// <summary>Compresses into <paramref name="destination"/>; returns bytes written.</summary>
    public static int Compress(ReadOnlySpan<byte> source, Span<byte> destination, int level = DefaultLevel)
    {
        var c = _compressor ??= new Compressor(level);
        if (c.Level != level) c.Level = level;
        try
        {
            if (!c.TryWrap(source, destination, out int written))
                throw new InvalidDataException("zstd: compression failed (destination too small)");
            return written;
        }
        catch (ZstdException e) { throw new InvalidDataException($"zstd: compression failed ({e.Message})"); }
    }

    public static byte[] Compress(ReadOnlySpan<byte> source, int level = DefaultLevel)
    {
        var buffer = new byte[CompressBound(source.Length)];
        int n = Compress(source, buffer, level);
        return buffer.AsSpan(0, n).ToArray();
    }

    /// <summary>Decompresses a whole frame into <paramref name="destination"/>; returns bytes written.</summary>
    public static int Decompress(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        var d = _decompressor ??= new Decompressor();
        try { return d.Unwrap(source, destination); }
        catch (ZstdException e) { throw new InvalidDataException($"zstd: corrupt or oversized compressed data ({e.Message})"); }
    }

    /// <summary>Decompressed size recorded in the frame header, or -1 when absent or invalid.</summary>
    public static long FrameContentSize(ReadOnlySpan<byte> source)
    {
        ulong n;
        fixed (byte* s = source) n = Methods.ZSTD_getFrameContentSize(s, (nuint)source.Length);
        return n >= 0xFFFF_FFFF_FFFF_FFFEUL || n > long.MaxValue ? -1 : (long)n;
    }

    /// <summary>Decompresses a frame whose recorded size is at most <paramref name="maxLength"/>.</summary>
    public static byte[] Decompress(ReadOnlySpan<byte> source, int maxLength)
    {
        long size = FrameContentSize(source);
        if (size < 0 || size > maxLength) throw new InvalidDataException("zstd: frame size missing or too large");
        var buffer = new byte[size];
        int n = Decompress(source, buffer);
        if (n != size) throw new InvalidDataException("zstd: frame shorter than its header says");
        return buffer;
    }
}
