using System.CommandLine;

namespace LiveMigration.Cli.Commands;

/// <summary>The commands that talk to a host, in the order `lm --help` lists them: the full CLI and the AOT client add the same ones.</summary>
public static class ClientCommandList
{
    public static Command[] HostClients(TimelineWriter? timeline) =>
    [
        HostCommands.Start(), HostCommands.Status(), HostCommands.Stop(), HostCommands.ConsoleCommand(), HostCommands.Resolve(),
        MigrateCommands.Migrate(timeline), MigrateCommands.Cancel(),
    ];
}
