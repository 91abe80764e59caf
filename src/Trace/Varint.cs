namespace LiveMigration.Trace;

/// <summary>
/// Unsigned LEB128 (7 bits per byte, low groups first, high bit = more) and zigzag for signed deltas.
/// A value takes at most 10 bytes; an 11th continuation byte or bits beyond 64 are malformed.
/// </summary>
public static class Varint
{
    public const int MaxLength = 10;

    public static int Write(Span<byte> destination, ulong value)
    {
        int i = 0;
        while (value >= 0x80)
        {
            destination[i++] = (byte)(value | 0x80);
            value >>= 7;
        }
        destination[i++] = (byte)value;
        return i;
    }

    public static int Length(ulong value)
    {
        int n = 1;
        while (value >= 0x80) { value >>= 7; n++; }
        return n;
    }

    /// <summary>Reads a varint at <paramref name="position"/>; false when the data ends first or the value is malformed.</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, ref int position, out ulong value)
    {
        value = 0;
        int shift = 0;
        for (int i = position; i < source.Length; i++)
        {
            byte b = source[i];
            if (shift == 63 && b > 1) return false; // more than 64 bits
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) { position = i + 1; return true; }
            shift += 7;
            if (shift > 63) return false;
        }
        return false;
    }

    public static ulong ZigZag(long value) => (ulong)((value << 1) ^ (value >> 63));

    public static long UnZigZag(ulong value) => (long)(value >> 1) ^ -(long)(value & 1);
}
