namespace LiveMigration.Guest.Tests.State;

public class MachineConfigTests
{
    [Theory]
    [InlineData("128M", 128UL << 20)]
    [InlineData("1G", 1UL << 30)]
    [InlineData("65536", 65536UL)]
    [InlineData("64KiB", 64UL << 10)]
    [InlineData(" 2m ", 2UL << 20)]
    public void ParsesSizes(string text, ulong expected) => Assert.Equal(expected, MachineConfig.ParseSize(text));

    [Theory]
    [InlineData("")]
    [InlineData("0")]
    [InlineData("-1")]
    [InlineData("12Q")]
    [InlineData("4097")]
    [InlineData("17G")]
    [InlineData("18446744073709551615K")] // overflows 64 bits: still a one-line FormatException for the CLI
    [InlineData("99999999999999999999")]
    public void RejectsBadSizesWithFormatException(string text) => Assert.Throws<FormatException>(() => MachineConfig.ParseSize(text));
}
