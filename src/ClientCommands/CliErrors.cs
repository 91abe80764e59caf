using LiveMigration.Guest.Loader;

namespace LiveMigration.Cli;

/// <summary>Turns the errors a user can cause into one line on stderr and an exit code.</summary>
public static class CliErrors
{
    public const int UsageError = 2;

    public static int Run(Func<int> action)
    {
        try { return action(); }
        catch (Exception e) when (e is ElfLoadException or LiveMigration.Guest.Platform.BootImageException or FormatException or InvalidDataException
                                      or LiveMigration.Trace.TraceFormatException or FileNotFoundException or IOException or UnauthorizedAccessException or System.Net.Sockets.SocketException
                                      or LiveMigration.Migration.Hosting.HostException or TimeoutException)
        {
            Console.Error.WriteLine($"lm: error: {e.Message}");
            return UsageError;
        }
    }
}
