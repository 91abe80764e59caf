namespace LiveMigration.Guest;

/// <summary>
/// A port with no inputs that discards output: for a machine that is being built, restored or
/// replayed into (its real port comes later) and for tests that feed nothing. Time stands where
/// the CLINT has it.
/// </summary>
public sealed class NullHostPort : IHostPort
{
    public static readonly NullHostPort Instance = new();
    public ulong NextPollIcount => ulong.MaxValue;
    public void Poll(Machine machine) { }
    public ulong ReadTime(Machine machine) => machine.Clint.Time;
    public bool WaitForInput(Machine machine) => false;
    public ushort ReadEntropy(Machine machine) => 0;
    public void SerialOutput(byte value) { }
}
