using System.CommandLine;
using LiveMigration.Cli.Commands;
using LiveMigration.Operator.Plots;

var root = new RootCommand("lm: a deterministic RISC-V machine that migrates live by shipping its execution log");
root.Subcommands.Add(RunCommand.Create());
root.Subcommands.Add(HostCommand.Create());
foreach (var c in ClientCommandList.HostClients(new TimelineWriter(path => TimelinePlot.FormatOf(path), TimelinePlot.Write))) root.Subcommands.Add(c);
root.Subcommands.Add(FleetCommands.Hosts());
root.Subcommands.Add(FleetCommands.Guests());
root.Subcommands.Add(FleetCommands.Recover());
root.Subcommands.Add(FleetCommands.Drain());
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(CertsCommand.Create());
root.Subcommands.Add(ReplayCommand.Create());
root.Subcommands.Add(TraceCommand.Create());
root.Subcommands.Add(SnapshotCommands.CreateSnapshot());
root.Subcommands.Add(SnapshotCommands.CreateRestore());
return root.Parse(args).Invoke();
