using System.CommandLine;
using LiveMigration.Cli.Commands;

var root = new RootCommand("lm: a deterministic RISC-V machine that migrates live by shipping its execution log");
root.Subcommands.Add(RunCommand.Create());
root.Subcommands.Add(HostCommands.Host());
root.Subcommands.Add(HostCommands.Start());
root.Subcommands.Add(HostCommands.Status());
root.Subcommands.Add(HostCommands.Stop());
root.Subcommands.Add(HostCommands.ConsoleCommand());
root.Subcommands.Add(HostCommands.Resolve());
root.Subcommands.Add(MigrateCommands.Migrate());
root.Subcommands.Add(MigrateCommands.Cancel());
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(ReplayCommand.Create());
root.Subcommands.Add(TraceCommand.Create());
root.Subcommands.Add(SnapshotCommands.CreateSnapshot());
root.Subcommands.Add(SnapshotCommands.CreateRestore());
return root.Parse(args).Invoke();
