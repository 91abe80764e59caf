namespace LiveMigration.Recorder.Serial;

/// <summary>Where a guest's UART meets the real world: stdio, a TCP socket, or a test buffer.</summary>
public interface ISerialBackend : IDisposable
{
    /// <summary>Copies up to destination.Length pending input bytes; returns the count (0 when none are pending).</summary>
    int Read(Span<byte> destination);

    /// <summary>True once no more input can ever arrive (stdin at EOF, peer gone for good).</summary>
    bool InputClosed { get; }

    /// <summary>Signalled whenever input arrives or the input closes.</summary>
    WaitHandle InputArrived { get; }

    void Write(byte value);

    void Flush();
}
