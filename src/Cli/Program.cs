using System.CommandLine;
using LiveMigration.Cli.Commands;

var root = new RootCommand("lm: a deterministic RISC-V machine that migrates live by shipping its execution log");
root.Subcommands.Add(RunCommand.Create());
root.Subcommands.Add(ReplayCommand.Create());
root.Subcommands.Add(TraceCommand.Create());
root.Subcommands.Add(SnapshotCommands.CreateSnapshot());
root.Subcommands.Add(SnapshotCommands.CreateRestore());
return root.Parse(args).Invoke();
