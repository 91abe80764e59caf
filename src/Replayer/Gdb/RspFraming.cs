using System.Text;

namespace LiveMigration.Replayer.Gdb;

/// <summary>What <see cref="RspDecoder"/> found in the byte stream from gdb.</summary>
public enum RspItemKind { Ack, Nack, Interrupt, Packet, BadChecksum }

public readonly record struct RspItem(RspItemKind Kind, string Payload = "");

/// <summary>
/// gdb remote serial protocol framing. A packet is <c>$payload#cc</c>, cc the two-hex-digit sum of
/// the payload bytes mod 256; <c>}</c> escapes the next byte XORed with 0x20 (for <c>$ # } *</c>);
/// <c>+</c>/<c>-</c> acknowledge; a lone 0x03 is an interrupt. Payload bytes map 1:1 to chars (Latin-1).
/// </summary>
public static class RspFraming
{
    public static byte Checksum(ReadOnlySpan<byte> payload)
    {
        byte sum = 0;
        foreach (var b in payload) sum += b;
        return sum;
    }

    /// <summary>Frames a payload, escaping the characters the protocol reserves.</summary>
    public static byte[] Encode(string payload)
    {
        var body = new List<byte>(payload.Length + 4);
        foreach (char ch in payload)
        {
            byte b = (byte)ch;
            if (b is (byte)'$' or (byte)'#' or (byte)'}' or (byte)'*') { body.Add((byte)'}'); body.Add((byte)(b ^ 0x20)); }
            else body.Add(b);
        }
        var sum = Checksum(body.ToArray());
        var framed = new byte[body.Count + 4];
        framed[0] = (byte)'$';
        body.CopyTo(framed, 1);
        framed[^3] = (byte)'#';
        framed[^2] = (byte)HexDigit(sum >> 4);
        framed[^1] = (byte)HexDigit(sum & 15);
        return framed;
    }

    public static char HexDigit(int v) => "0123456789abcdef"[v & 15];

    public static string ToHex(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length * 2);
        foreach (var b in bytes) sb.Append(HexDigit(b >> 4)).Append(HexDigit(b));
        return sb.ToString();
    }

    public static byte[] FromHex(ReadOnlySpan<char> hex)
    {
        if (hex.Length % 2 != 0) throw new FormatException("odd number of hex digits");
        var bytes = new byte[hex.Length / 2];
        for (int i = 0; i < bytes.Length; i++) bytes[i] = Convert.ToByte(hex.Slice(2 * i, 2).ToString(), 16);
        return bytes;
    }

    /// <summary>A 64-bit value as gdb's little-endian register hex.</summary>
    public static string U64Le(ulong v)
    {
        Span<byte> b = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        return ToHex(b);
    }

    public static string HexText(string text) => ToHex(Encoding.UTF8.GetBytes(text));
}

/// <summary>Incremental decoder of the bytes gdb sends: any split across reads.</summary>
public sealed class RspDecoder
{
    private enum State { Idle, Body, Escape, Sum1, Sum2 }

    private readonly List<byte> _body = [];
    private State _state;
    private byte _sum;
    private int _given;

    /// <summary>Feeds one byte; returns an item when one is complete.</summary>
    public RspItem? Feed(byte b)
    {
        switch (_state)
        {
            case State.Idle:
                if (b == '$') { _body.Clear(); _sum = 0; _state = State.Body; }
                else if (b == '+') return new RspItem(RspItemKind.Ack);
                else if (b == '-') return new RspItem(RspItemKind.Nack);
                else if (b == 0x03) return new RspItem(RspItemKind.Interrupt);
                return null; // noise between packets
            case State.Body:
                _sum += b;
                if (b == '#') { _sum -= b; _state = State.Sum1; }
                else if (b == '}') _state = State.Escape;
                else _body.Add(b);
                return null;
            case State.Escape:
                _sum += b;
                _body.Add((byte)(b ^ 0x20));
                _state = State.Body;
                return null;
            case State.Sum1:
                _given = HexValue(b) << 4;
                _state = State.Sum2;
                return null;
            default:
                _given |= HexValue(b);
                _state = State.Idle;
                string payload = Encoding.Latin1.GetString(_body.ToArray());
                return _given == _sum ? new RspItem(RspItemKind.Packet, payload) : new RspItem(RspItemKind.BadChecksum, payload);
        }
    }

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => 0x100, // never matches a checksum
    };
}
