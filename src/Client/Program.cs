using System.CommandLine;
using LiveMigration.Cli.Commands;

// The same command objects as the full CLI (src/Cli/Program.cs), so options, help, output and errors
// match; ./lm sends only these commands here, and `lm migrate --timeline` to the full CLI.
var root = new RootCommand("lm client: the commands that talk to a host or read a trace (NativeAOT)");
root.Subcommands.Add(HostCommands.Start());
root.Subcommands.Add(HostCommands.Status());
root.Subcommands.Add(HostCommands.Stop());
root.Subcommands.Add(HostCommands.ConsoleCommand());
root.Subcommands.Add(HostCommands.Resolve());
root.Subcommands.Add(MigrateCommands.Migrate(timeline: null));
root.Subcommands.Add(MigrateCommands.Cancel());
root.Subcommands.Add(TraceCommand.Create());
return root.Parse(args).Invoke();
