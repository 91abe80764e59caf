// CodecBench: page hashing (xxh3-64 on 4 KiB pages) and zstd on 1 MiB page batches, the managed
// codecs we ship (System.IO.Hashing, ZstdSharp) next to Debian's libxxhash0 / libzstd1 when those
// happen to be installed (they are no longer needed; this only compares).
// Usage: dotnet run -c Release --project bench/CodecBench [-- --rounds N]
using System.Diagnostics;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using LiveMigration.Trace.Compression;

int rounds = args.Length >= 2 && args[0] == "--rounds" ? int.Parse(args[1]) : 7;
const int PageSize = 4096, Pages = 16384, Batch = 256; // 64 MiB of pages, batches of 1 MiB as PageSender sends
byte[] ram = MakePages(Pages);
var native = NativeCodecs.TryLoad();
Console.WriteLine($"CodecBench: {Environment.ProcessorCount} cores, .NET {Environment.Version}, {rounds} rounds (median), {Pages * PageSize >> 20} MiB of mixed pages");
Console.WriteLine(native == null ? "native libxxhash/libzstd: not installed, managed only" : "native libxxhash.so.0 / libzstd.so.1: present, compared side by side");
Console.WriteLine();

// Same values as libxxhash (checked on every page) before anything is timed.
if (native != null)
    for (int p = 0; p < Pages; p++)
    {
        var page = ram.AsSpan(p * PageSize, PageSize);
        if (XxHash3.HashToUInt64(page) != native.Xxh3(page, 0) || XxHash3.HashToUInt64(page, p) != native.Xxh3(page, (ulong)p))
            throw new InvalidOperationException($"xxh3 of page {p} differs between System.IO.Hashing and libxxhash");
    }

unsafe double HashManaged()
{
    ulong acc = 0;
    var sw = Stopwatch.StartNew();
    fixed (byte* r = ram)
        for (int p = 0; p < Pages; p++) acc += XxHash3.HashToUInt64(new ReadOnlySpan<byte>(r + (long)p * PageSize, PageSize));
    double s = sw.Elapsed.TotalSeconds;
    GC.KeepAlive(acc);
    return s;
}
double HashNative()
{
    ulong acc = 0;
    var sw = Stopwatch.StartNew();
    for (int p = 0; p < Pages; p++) acc += native!.Xxh3(ram.AsSpan(p * PageSize, PageSize), 0);
    double s = sw.Elapsed.TotalSeconds;
    GC.KeepAlive(acc);
    return s;
}

int bound = Zstd.CompressBound(Batch * PageSize);
var packed = new byte[Pages / Batch][];
for (int b = 0; b < packed.Length; b++) packed[b] = new byte[bound];
var packedLength = new int[packed.Length];
var back = new byte[Batch * PageSize];

(double Compress, double Decompress, long Bytes) ZstdRun(int level, bool useNative)
{
    long bytes = 0;
    var sw = Stopwatch.StartNew();
    for (int b = 0; b < packed.Length; b++)
    {
        var raw = ram.AsSpan(b * Batch * PageSize, Batch * PageSize);
        packedLength[b] = useNative ? native!.Compress(raw, packed[b], level) : Zstd.Compress(raw, packed[b], level);
        bytes += packedLength[b];
    }
    double c = sw.Elapsed.TotalSeconds;
    sw.Restart();
    for (int b = 0; b < packed.Length; b++)
    {
        int n = useNative ? native!.Decompress(packed[b].AsSpan(0, packedLength[b]), back) : Zstd.Decompress(packed[b].AsSpan(0, packedLength[b]), back);
        if (n != back.Length) throw new InvalidOperationException("zstd round trip lost bytes");
    }
    double d = sw.Elapsed.TotalSeconds;
    // Frames are interchangeable: what one side wrote, the other reads.
    if (native != null)
    {
        var other = new byte[back.Length];
        int n = useNative ? Zstd.Decompress(packed[0].AsSpan(0, packedLength[0]), other) : native.Decompress(packed[0].AsSpan(0, packedLength[0]), other);
        if (n != other.Length || !other.AsSpan().SequenceEqual(ram.AsSpan(0, other.Length)))
            throw new InvalidOperationException("a zstd frame of one library did not decode with the other");
    }
    return (c, d, bytes);
}

double mib = Pages * (double)PageSize / (1 << 20);
Console.WriteLine($"{"codec",-34}{"managed",12}{"native",12}{"managed/native",16}");
var hm = new List<double>();
var hn = new List<double>();
HashManaged(); if (native != null) HashNative(); // warm up
for (int r = 0; r < rounds; r++)
{
    hm.Add(HashManaged());
    if (native != null) hn.Add(HashNative());
}
Row("xxh3-64, 4 KiB pages (GiB/s)", mib / 1024 / Median(hm), native == null ? null : mib / 1024 / Median(hn));
Row("xxh3-64, 4 KiB pages (ns/page)", Median(hm) / Pages * 1e9, native == null ? null : Median(hn) / Pages * 1e9, lowerIsBetter: true);

foreach (int level in new[] { 1, 3 })
{
    var mc = new List<double>(); var md = new List<double>(); var nc = new List<double>(); var nd = new List<double>();
    long mBytes = 0, nBytes = 0;
    ZstdRun(level, false); if (native != null) ZstdRun(level, true);
    for (int r = 0; r < rounds; r++)
    {
        // Alternate the order so load from the other engineers' builds falls on both sides alike.
        bool nativeFirst = r % 2 == 1 && native != null;
        if (nativeFirst) { var x = ZstdRun(level, true); nc.Add(x.Compress); nd.Add(x.Decompress); nBytes = x.Bytes; }
        var m = ZstdRun(level, false); mc.Add(m.Compress); md.Add(m.Decompress); mBytes = m.Bytes;
        if (native != null && !nativeFirst) { var x = ZstdRun(level, true); nc.Add(x.Compress); nd.Add(x.Decompress); nBytes = x.Bytes; }
    }
    Row($"zstd -{level} compress 1 MiB (MiB/s)", mib / Median(mc), native == null ? null : mib / Median(nc));
    Row($"zstd -{level} decompress 1 MiB (MiB/s)", mib / Median(md), native == null ? null : mib / Median(nd));
    Row($"zstd -{level} ratio (raw/compressed)", mib * (1 << 20) / mBytes, native == null ? null : mib * (1 << 20) / nBytes);
}
Console.WriteLine();
Console.WriteLine("1 Gbit/s = 119 MiB/s of payload: the link, not the codec, bounds a page stream above that.");
return 0;

static void Row(string name, double managed, double? nativeValue, bool lowerIsBetter = false)
{
    string ratio = nativeValue is { } n ? $"{(lowerIsBetter ? n / managed : managed / n),15:F2}x" : "";
    Console.WriteLine($"{name,-34}{managed,12:F2}{(nativeValue is { } v ? v.ToString("F2") : "-"),12}{ratio}");
}

static double Median(List<double> xs) { var s = xs.Order().ToList(); return s[s.Count / 2]; }

// Pages as guests leave them: a quarter random (compressed data, keys), half structured (small
// integers, text, pointers), a quarter sparse (a few words on a zero page).
static byte[] MakePages(int pages)
{
    var rng = new Random(1);
    var ram = new byte[pages * 4096];
    for (int p = 0; p < pages; p++)
    {
        var page = ram.AsSpan(p * 4096, 4096);
        switch (p % 4)
        {
            case 0: rng.NextBytes(page); break;
            case 1:
                for (int i = 0; i < 4096; i += 8) BitConverter.TryWriteBytes(page[i..], (ulong)(p * 512 + i / 8) * 3 % 1000);
                break;
            case 2:
                for (int i = 0; i < 4096; i++) page[i] = (byte)"the quick brown fox jumps over the lazy dog 0123456789\n"[(i * 7 + p) % 55];
                break;
            case 3:
                for (int i = 0; i < 16; i++) BitConverter.TryWriteBytes(page[(rng.Next(512) * 8)..], 0x8000_0000UL + (ulong)rng.Next(1 << 20) * 8);
                break;
        }
    }
    return ram;
}

/// <summary>Debian's libxxhash0 and libzstd1 through P/Invoke, for comparison only.</summary>
sealed unsafe class NativeCodecs
{
    private readonly delegate* unmanaged<byte*, nuint, ulong, ulong> _xxh3;
    private readonly delegate* unmanaged<byte*, nuint, byte*, nuint, int, nuint> _compress;
    private readonly delegate* unmanaged<byte*, nuint, byte*, nuint, nuint> _decompress;
    private readonly delegate* unmanaged<nuint, uint> _isError;

    private NativeCodecs(nint xxhash, nint zstd)
    {
        _xxh3 = (delegate* unmanaged<byte*, nuint, ulong, ulong>)NativeLibrary.GetExport(xxhash, "XXH3_64bits_withSeed");
        _compress = (delegate* unmanaged<byte*, nuint, byte*, nuint, int, nuint>)NativeLibrary.GetExport(zstd, "ZSTD_compress");
        _decompress = (delegate* unmanaged<byte*, nuint, byte*, nuint, nuint>)NativeLibrary.GetExport(zstd, "ZSTD_decompress");
        _isError = (delegate* unmanaged<nuint, uint>)NativeLibrary.GetExport(zstd, "ZSTD_isError");
    }

    public static NativeCodecs? TryLoad() =>
        NativeLibrary.TryLoad("libxxhash.so.0", out nint x) && NativeLibrary.TryLoad("libzstd.so.1", out nint z) ? new NativeCodecs(x, z) : null;

    public ulong Xxh3(ReadOnlySpan<byte> data, ulong seed) { fixed (byte* p = data) return _xxh3(p, (nuint)data.Length, seed); }

    public int Compress(ReadOnlySpan<byte> src, Span<byte> dst, int level)
    {
        nuint n;
        fixed (byte* s = src) fixed (byte* d = dst) n = _compress(d, (nuint)dst.Length, s, (nuint)src.Length, level);
        if (_isError(n) != 0) throw new InvalidOperationException("native zstd compression failed");
        return (int)n;
    }

    public int Decompress(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        nuint n;
        fixed (byte* s = src) fixed (byte* d = dst) n = _decompress(d, (nuint)dst.Length, s, (nuint)src.Length);
        if (_isError(n) != 0) throw new InvalidOperationException("native zstd decompression failed");
        return (int)n;
    }
}
