namespace LiveMigration.Guest.Tests.Infra;

/// <summary>Tests of the block compiler compile after a few entries, not after the production threshold: short programs must run compiled.</summary>
internal static class EagerCompile
{
    public const short Threshold = 64;
}
