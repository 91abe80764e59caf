namespace LiveMigration.Guest.Native;

/// <summary>A native library we bind to is not installed; the message names the Debian package.</summary>
public sealed class NativeLibraryMissingException(string library, string debianPackage, Exception inner)
    : Exception($"native library {library} is missing: install it with 'apt-get install {debianPackage}'", inner)
{
    public string DebianPackage { get; } = debianPackage;
}
