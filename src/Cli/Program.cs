using System.CommandLine;
using LiveMigration.Cli.Commands;

var root = new RootCommand("lm: a deterministic RISC-V machine that migrates live by shipping its execution log");
root.Subcommands.Add(RunCommand.Create());
return root.Parse(args).Invoke();
