using System.Runtime.InteropServices;

namespace LiveMigration.Guest.Native;

/// <summary>xxh3-64 through Debian's libxxhash0 (System.IO.Hashing is not available here).</summary>
public static unsafe partial class XxHash3
{
    private const string Lib = "libxxhash.so.0";

    [LibraryImport(Lib, EntryPoint = "XXH3_64bits")]
    [UnmanagedCallConv(CallConvs = [typeof(System.Runtime.CompilerServices.CallConvCdecl)])]
    private static partial ulong Native64(void* data, nuint length);

    [LibraryImport(Lib, EntryPoint = "XXH3_64bits_withSeed")]
    [UnmanagedCallConv(CallConvs = [typeof(System.Runtime.CompilerServices.CallConvCdecl)])]
    private static partial ulong Native64Seed(void* data, nuint length, ulong seed);

    public static ulong Hash(ReadOnlySpan<byte> data)
    {
        EnsureLoaded();
        fixed (byte* p = data) return Native64(p, (nuint)data.Length);
    }

    public static ulong Hash(ReadOnlySpan<byte> data, ulong seed)
    {
        EnsureLoaded();
        fixed (byte* p = data) return Native64Seed(p, (nuint)data.Length, seed);
    }

    /// <summary>Hot path for callers that already hold a pointer (page hashing).</summary>
    public static ulong Hash(byte* data, int length) => Native64(data, (nuint)length);

    private static bool _loaded;

    /// <summary>Turns a missing libxxhash into an error that names the Debian package.</summary>
    public static void EnsureLoaded()
    {
        if (_loaded) return;
        try { Native64(null, 0); _loaded = true; }
        catch (DllNotFoundException e) { throw new NativeLibraryMissingException(Lib, "libxxhash0", e); }
    }
}
