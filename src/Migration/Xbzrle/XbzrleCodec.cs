using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace LiveMigration.Migration.Xbzrle;

/*
 * XBZRLE (XOR-based zero-run-length encoding), QEMU's wire encoding of a page as a delta
 * against the copy the receiver already holds (QEMU docs/xbzrle.txt, migration/xbzrle.c):
 *
 *   delta  = pair*                       (empty: the page is unchanged)
 *   pair   = zrun nzrun
 *   zrun   = length                      bytes equal in old and new page (skipped)
 *   nzrun  = length byte{length}         bytes that differ, copied from the new page
 *   length = ULEB128 unsigned integer    (7 bits per byte, low group first, bit 7 = "more")
 *
 * Rules (what the encoder always produces and the decoder insists on):
 *   - runs are maximal: a zrun ends at the first differing byte, an nzrun at the first equal one;
 *   - only the first zrun may be 0 (the page differs at byte 0); every nzrun is >= 1;
 *   - the trailing zrun (equal bytes up to the end of the page) is not written;
 *   - a delta never covers bytes past the end of the page.
 * For 4 KiB pages every length fits in 2 ULEB128 bytes, and the bytes are exactly QEMU's.
 * The decoder accepts lengths of up to 5 ULEB128 bytes (values up to int.MaxValue), then checks
 * them against the page.
 *
 * Worked example (8-byte page): old 00 11 22 33 44 55 66 77, new 00 11 AA BB 44 55 66 CC
 *   -> 02 02 AA BB 03 01 CC   (skip 2, copy 2: AA BB, skip 3, copy 1: CC)
 */

/// <summary>Outcome of <see cref="XbzrleCodec.Encode"/>.</summary>
public enum XbzrleEncodeStatus
{
    /// <summary>A delta was written; its length is returned.</summary>
    Encoded,
    /// <summary>Old and new page are identical: nothing to send.</summary>
    Unchanged,
    /// <summary>The delta would exceed the limit: send the whole page instead.</summary>
    Overflow,
}

/// <summary>Why <see cref="XbzrleCodec.TryDecode"/> rejected a delta.</summary>
public enum XbzrleDecodeError
{
    None,
    /// <summary>A ULEB128 length ends in the middle (last byte has the continuation bit set).</summary>
    TruncatedLength,
    /// <summary>A ULEB128 length has more than 5 bytes or exceeds int.MaxValue.</summary>
    LengthTooLarge,
    /// <summary>A zero run is not followed by a data run.</summary>
    MissingDataRun,
    /// <summary>A zero run of length 0 other than the first.</summary>
    EmptyZeroRun,
    /// <summary>A data run of length 0.</summary>
    EmptyDataRun,
    /// <summary>A run reaches past the end of the page.</summary>
    RunPastPageEnd,
    /// <summary>A data run announces more bytes than the delta holds.</summary>
    TruncatedData,
}

/// <summary>
/// The XBZRLE page codec (see the grammar at the top of this file). Stateless and allocation-free:
/// callers pass spans; safe to use from several threads at once.
/// </summary>
public static class XbzrleCodec
{
    /// <summary>Most bytes a ULEB128 length of an int takes.</summary>
    public const int MaxLengthBytes = 5;

    /// <summary>
    /// Encodes <paramref name="newPage"/> as a delta against <paramref name="oldPage"/> into
    /// <paramref name="destination"/>, whose length is the limit: <see cref="XbzrleEncodeStatus.Overflow"/>
    /// exactly when the full delta would be longer than <c>destination.Length</c>.
    /// </summary>
    /// <param name="length">Bytes written for <see cref="XbzrleEncodeStatus.Encoded"/>; 0 otherwise.</param>
    public static XbzrleEncodeStatus Encode(ReadOnlySpan<byte> oldPage, ReadOnlySpan<byte> newPage, Span<byte> destination, out int length)
    {
        if (oldPage.Length != newPage.Length) ThrowPageSizeMismatch();
        int size = newPage.Length;
        int i = 0, d = 0;
        length = 0;
        while (true)
        {
            int zrun = oldPage[i..].CommonPrefixLength(newPage[i..]);
            if (zrun == size) return XbzrleEncodeStatus.Unchanged;
            i += zrun;
            if (i == size) break; // trailing zero run is implicit
            int nzrun = DifferingRunLength(oldPage[i..], newPage[i..]);
            int need = UlebSize((uint)zrun) + UlebSize((uint)nzrun) + nzrun;
            if (need > destination.Length - d) return XbzrleEncodeStatus.Overflow;
            d += WriteUleb(destination[d..], (uint)zrun);
            d += WriteUleb(destination[d..], (uint)nzrun);
            newPage.Slice(i, nzrun).CopyTo(destination[d..]);
            d += nzrun;
            i += nzrun;
            if (i == size) break;
        }
        length = d;
        return XbzrleEncodeStatus.Encoded;
    }

    /// <summary>Size of the delta with no limit: 0 when unchanged (for accounting and tests).</summary>
    public static int EncodedSize(ReadOnlySpan<byte> oldPage, ReadOnlySpan<byte> newPage)
    {
        if (oldPage.Length != newPage.Length) ThrowPageSizeMismatch();
        int size = newPage.Length, i = 0, total = 0;
        while (true)
        {
            int zrun = oldPage[i..].CommonPrefixLength(newPage[i..]);
            i += zrun;
            if (i == size) return total;
            int nzrun = DifferingRunLength(oldPage[i..], newPage[i..]);
            total += UlebSize((uint)zrun) + UlebSize((uint)nzrun) + nzrun;
            i += nzrun;
            if (i == size) return total;
        }
    }

    /// <summary>
    /// Applies <paramref name="delta"/> to <paramref name="page"/> (which holds the old copy) in place.
    /// The delta is validated completely before the page is touched, so a rejected delta leaves the
    /// page as it was.
    /// </summary>
    /// <exception cref="InvalidDataException">The delta is malformed; the message says where and why.</exception>
    public static void Decode(ReadOnlySpan<byte> delta, Span<byte> page)
    {
        if (!TryDecode(delta, page, out var error, out int offset)) ThrowMalformed(error, offset);
    }

    /// <summary>
    /// Like <see cref="Decode"/> without exceptions: on failure returns false with the reason and the
    /// delta offset where it was found, and leaves <paramref name="page"/> unchanged.
    /// </summary>
    public static bool TryDecode(ReadOnlySpan<byte> delta, Span<byte> page, out XbzrleDecodeError error, out int errorOffset)
    {
        error = Walk(delta, page.Length, default, out errorOffset);
        if (error != XbzrleDecodeError.None) return false;
        Walk(delta, page.Length, page, out _);
        return true;
    }

    /// <summary>Parses the delta against a page of <paramref name="pageSize"/> bytes; applies it when <paramref name="page"/> is not empty.</summary>
    private static XbzrleDecodeError Walk(ReadOnlySpan<byte> delta, int pageSize, Span<byte> page, out int at)
    {
        int i = 0, p = 0;
        bool apply = !page.IsEmpty;
        while (i < delta.Length)
        {
            at = i;
            var e = ReadUleb(delta, ref i, out int zrun);
            if (e != XbzrleDecodeError.None) return e;
            if (zrun == 0 && at != 0) return XbzrleDecodeError.EmptyZeroRun;
            if (zrun > pageSize - p) return XbzrleDecodeError.RunPastPageEnd;
            p += zrun;

            at = i;
            if (i == delta.Length) return XbzrleDecodeError.MissingDataRun;
            e = ReadUleb(delta, ref i, out int nzrun);
            if (e != XbzrleDecodeError.None) return e;
            if (nzrun == 0) return XbzrleDecodeError.EmptyDataRun;
            if (nzrun > pageSize - p) return XbzrleDecodeError.RunPastPageEnd;
            if (nzrun > delta.Length - i) { at = i; return XbzrleDecodeError.TruncatedData; }
            if (apply) delta.Slice(i, nzrun).CopyTo(page[p..]);
            i += nzrun;
            p += nzrun;
        }
        at = i;
        return XbzrleDecodeError.None;
    }

    private static XbzrleDecodeError ReadUleb(ReadOnlySpan<byte> src, ref int i, out int value)
    {
        uint v = 0;
        value = 0;
        for (int shift = 0; shift < 7 * MaxLengthBytes; shift += 7)
        {
            if (i >= src.Length) return XbzrleDecodeError.TruncatedLength;
            uint b = src[i++];
            if (shift == 28 && (b & 0x70) != 0) return XbzrleDecodeError.LengthTooLarge; // bits beyond 32
            v |= (b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                if (v > int.MaxValue) return XbzrleDecodeError.LengthTooLarge;
                value = (int)v;
                return XbzrleDecodeError.None;
            }
        }
        return XbzrleDecodeError.LengthTooLarge;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int UlebSize(uint v) => v < 0x80 ? 1 : (38 - BitOperations.LeadingZeroCount(v)) / 7;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int WriteUleb(Span<byte> dst, uint v)
    {
        int n = 0;
        while (v >= 0x80)
        {
            dst[n++] = (byte)(v | 0x80);
            v >>= 7;
        }
        dst[n++] = (byte)v;
        return n;
    }

    /// <summary>Length of the leading run where <paramref name="a"/> and <paramref name="b"/> differ at every byte.</summary>
    internal static int DifferingRunLength(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int n = a.Length, i = 0;
        ref byte ra = ref MemoryMarshal.GetReference(a);
        ref byte rb = ref MemoryMarshal.GetReference(b);
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - Vector256<byte>.Count; i += Vector256<byte>.Count)
            {
                uint eq = Vector256.Equals(Vector256.LoadUnsafe(ref ra, (nuint)i), Vector256.LoadUnsafe(ref rb, (nuint)i)).ExtractMostSignificantBits();
                if (eq != 0) return i + BitOperations.TrailingZeroCount(eq);
            }
        }
        if (Vector128.IsHardwareAccelerated)
        {
            for (; i <= n - Vector128<byte>.Count; i += Vector128<byte>.Count)
            {
                uint eq = Vector128.Equals(Vector128.LoadUnsafe(ref ra, (nuint)i), Vector128.LoadUnsafe(ref rb, (nuint)i)).ExtractMostSignificantBits();
                if (eq != 0) return i + BitOperations.TrailingZeroCount(eq);
            }
        }
        for (; i < n; i++)
            if (Unsafe.Add(ref ra, i) == Unsafe.Add(ref rb, i)) return i;
        return n;
    }

    [DoesNotReturn]
    private static void ThrowPageSizeMismatch() => throw new ArgumentException("old and new page must have the same length");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowMalformed(XbzrleDecodeError error, int offset) =>
        throw new InvalidDataException($"malformed XBZRLE delta at byte {offset}: {Describe(error)}");

    public static string Describe(XbzrleDecodeError error) => error switch
    {
        XbzrleDecodeError.None => "no error",
        XbzrleDecodeError.TruncatedLength => "a ULEB128 length is cut off",
        XbzrleDecodeError.LengthTooLarge => "a ULEB128 length is too large",
        XbzrleDecodeError.MissingDataRun => "a zero run is not followed by a data run",
        XbzrleDecodeError.EmptyZeroRun => "a zero run of length 0 that is not the first",
        XbzrleDecodeError.EmptyDataRun => "a data run of length 0",
        XbzrleDecodeError.RunPastPageEnd => "a run reaches past the end of the page",
        XbzrleDecodeError.TruncatedData => "a data run is longer than the bytes that follow",
        _ => error.ToString(),
    };
}
