using System.Buffers.Binary;
using System.IO.Hashing;

namespace LiveMigration.Migration.Protocol;

/// <summary>
/// The fixed 16-byte frame header in front of every protobuf <see cref="Envelope"/>:
/// <code>
///  0      4        6        8          12         16
///  | "LMIG" | version | type   | length   | xxh3-lo32 | payload (length bytes, protobuf Envelope)
///  | magic  | u16 LE  | u16 LE | u32 LE   | u32 LE    |
/// </code>
/// <c>type</c> repeats the envelope's body case so a reader can log or skip a frame without parsing
/// it; the checksum catches garbage and torn streams early with a clear message.
/// </summary>
public static class Frame
{
    public const int HeaderSize = 16;
    public const uint Magic = 0x47494D4C; // "LMIG" little-endian

    /// <summary>
    /// The protocol version. Bump it for a change an older peer would misread (a new required
    /// message in the switchover, a changed meaning); an added optional field does not bump it.
    /// A host accepts peers whose version lies in [<see cref="MinProtocolVersion"/>, <see cref="ProtocolVersion"/>].
    /// </summary>
    /// 2: the destination's Heartbeat is required (a source refuses to pause toward a silent peer),
    /// and a source holding a paused copy asks its destination with ArrivalQuery. Version-1 peers are refused.
    public const ushort ProtocolVersion = 2;
    public const ushort MinProtocolVersion = 2;

    /// <summary>Largest payload of any type (an ELF image); each type has its own, smaller limit in <see cref="FrameLimits"/>.</summary>
    public const int MaxPayload = FrameLimits.MaxElf + FrameLimits.Small;

    public static void WriteHeader(Span<byte> header, ushort type, ReadOnlySpan<byte> payload)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], ProtocolVersion);
        BinaryPrimitives.WriteUInt16LittleEndian(header[6..], type);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], (uint)payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[12..], Checksum(payload));
    }

    public static uint Checksum(ReadOnlySpan<byte> payload) => (uint)XxHash3.HashToUInt64(payload);

    /// <summary>
    /// Validates a header (magic, version, type, the type's size limit); returns the payload length or
    /// throws <see cref="ProtocolException"/> (<see cref="FrameTooLargeException"/> for a size over the limit).
    /// </summary>
    public static int ParseHeader(ReadOnlySpan<byte> header, out ushort version, out ushort type, out uint checksum)
    {
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(header);
        version = BinaryPrimitives.ReadUInt16LittleEndian(header[4..]);
        type = BinaryPrimitives.ReadUInt16LittleEndian(header[6..]);
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(header[8..]);
        checksum = BinaryPrimitives.ReadUInt32LittleEndian(header[12..]);
        if (magic != Magic)
            throw new ProtocolException($"the peer is not speaking the LiveMigration protocol (expected magic \"LMIG\", got {Printable(header[..4])})");
        if (version < MinProtocolVersion || version > ProtocolVersion)
            throw new ProtocolException($"frame header version {version} is not supported (this side speaks {MinProtocolVersion}..{ProtocolVersion})");
        if (type == 0 || !Enum.IsDefined((Envelope.BodyOneofCase)type)) throw new ProtocolException($"unknown message type {type}");
        int max = FrameLimits.Max(type);
        if (length > (uint)max) throw new FrameTooLargeException(type, length, max);
        return (int)length;
    }

    private static string Printable(ReadOnlySpan<byte> bytes)
    {
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = bytes[i] is >= 0x20 and < 0x7F ? (char)bytes[i] : '.';
        return $"\"{new string(chars)}\" (0x{Convert.ToHexString(bytes)})";
    }
}

/// <summary>A frame header announced more payload than its message type may carry.</summary>
public sealed class FrameTooLargeException(ushort type, uint length, int max)
    : ProtocolException($"a {(Envelope.BodyOneofCase)type} message of {length:N0} bytes exceeds its limit of {max:N0} bytes")
{
    public ushort Type { get; } = type;
    public uint Length { get; } = length;
}

/// <summary>The peer broke the protocol or refused us; the message is meant for a user.</summary>
public class ProtocolException(string message, Exception? inner = null) : IOException(message, inner);
