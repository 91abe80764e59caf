using System.CommandLine;
using LiveMigration.Cli.Commands;

// The same command objects as the full CLI (src/Cli/Program.cs), so options, help, output and errors
// match; ./lm sends only these commands here, and `lm migrate --timeline` to the full CLI.
LiveMigration.Client.ProtocolEnums.Keep();
var root = new RootCommand("lm client: the commands that talk to a host or read a trace (NativeAOT)");
foreach (var c in ClientCommandList.HostClients(timeline: null)) root.Subcommands.Add(c);
root.Subcommands.Add(TraceCommand.Create());
return root.Parse(args).Invoke();
