namespace LiveMigration.Guest;

/// <summary>
/// The machine's only door to the outside world. Every nondeterministic input (time, serial input,
/// later entropy and DMA) comes through here, always between instructions or, for a time read, at
/// the exact icount of the reading instruction. A recorder wraps a live port and logs what passes;
/// a replayer feeds the log back through the same calls.
/// </summary>
public interface IHostPort
{
    /// <summary>The icount at which the machine must next call <see cref="Poll"/>.</summary>
    ulong NextPollIcount { get; }

    /// <summary>Deliver the inputs due at the machine's current icount (<see cref="Machine.DeliverTime"/>, <see cref="Machine.DeliverSerialInput"/>).</summary>
    void Poll(Machine machine);

    /// <summary>The guest reads mtime (MMIO or the time CSR). Returns the value it sees.</summary>
    ulong ReadTime(Machine machine);

    /// <summary>
    /// The hart sleeps in WFI with nothing pending. Block until an input has been delivered (live) or
    /// deliver the next logged input at once (replay, which is how idle time is skipped). Returns false
    /// when no input can ever come.
    /// </summary>
    bool WaitForInput(Machine machine);

    /// <summary>The guest reads the Zkr <c>seed</c> CSR: 16 bits of host entropy.</summary>
    ushort ReadEntropy(Machine machine);

    /// <summary>
    /// The guest's virtio-rng asks for <paramref name="destination"/>.Length bytes of entropy. By
    /// default they are drawn 16 bits at a time through <see cref="ReadEntropy(Machine)"/>, so every
    /// port that logs the seed CSR logs these too; a port may deliver them in bulk instead.
    /// </summary>
    void ReadEntropy(Machine machine, Span<byte> destination)
    {
        for (int i = 0; i < destination.Length; i += 2)
        {
            ushort v = ReadEntropy(machine);
            destination[i] = (byte)v;
            if (i + 1 < destination.Length) destination[i + 1] = (byte)(v >> 8);
        }
    }

    /// <summary>
    /// The guest's disk took new requests off its queue (<see cref="Machine.BlockRequestsInFlight"/>
    /// are in flight). When they complete is an input: a port completes them with
    /// <see cref="Machine.CompleteBlockRequests"/>, now or later (between instructions), and a
    /// recording port logs it; a replaying port completes them only where its log says. By default
    /// they complete at once.
    /// </summary>
    void BlockRequestsPending(Machine machine) => machine.CompleteBlockRequests(machine.BlockRequestsInFlight);

    /// <summary>A byte the guest transmitted on its UART. Output is not an input: it is never logged.</summary>
    void SerialOutput(byte value);
}
