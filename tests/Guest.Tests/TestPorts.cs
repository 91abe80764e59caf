namespace LiveMigration.Guest.Tests;

public static class TestPorts
{
    /// <summary>A port with no inputs and discarded output.</summary>
    public sealed class Silent : IHostPort
    {
        public ulong NextPollIcount => ulong.MaxValue;
        public void Poll(Machine machine) { }
        public ulong ReadTime(Machine machine) => 0;
        public bool WaitForInput(Machine machine) => false;
        public ushort ReadEntropy(Machine machine) => 0;
        public void SerialOutput(byte value) { }
    }
}
