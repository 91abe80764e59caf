using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Guest.Loader;

// Guest MIPS of our machine against QEMU TCG on the same ELF, measured side by side in one run
// (the machine is shared and noisy: only the ratios are meaningful). Each figure is the best of N.
//   dotnet run -c Release --project bench/GuestBench [-- ELF [REPEATS] [--tcg-only | --ours-only]]
// --tcg-only: ours (block compiler) against QEMU TCG alone, without the interpreter's and -icount's
// slow runs (minutes on the long ELFs); --ours-only: the block compiler alone (A/B of our own changes).
string root = FindRoot();
bool oursOnly = args.Contains("--ours-only");
bool tcgOnly = oursOnly || args.Contains("--tcg-only");
args = args.Where(a => a is not ("--tcg-only" or "--ours-only")).ToArray();
string elf = args.Length > 0 ? args[0] : Path.Combine(root, "guests/build/compute.elf");
int repeats = args.Length > 1 ? int.Parse(args[1]) : 3;

var (icount, output) = RunOurs(elf, compile: true, out _);
Console.WriteLine($"guest: {Path.GetFileName(elf)}, {icount:N0} instructions, output: {output.Trim()}");

double ours = Best(repeats, () => { RunOurs(elf, compile: true, out double s); return s; });
double interp = tcgOnly ? double.NaN : Best(repeats, () => { RunOurs(elf, compile: false, out double s); return s; });
if (oursOnly)
{
    Console.WriteLine($"ours (block compiler) {ours:F3} s, {icount / ours / 1e6:F1} MIPS");
    return;
}
double qemuStartup = Best(repeats, () => RunQemu(Path.Combine(root, "guests/build/hello.elf"), icountMode: false));
double qemu = Best(repeats, () => RunQemu(elf, icountMode: false)) - qemuStartup;
double qemuIcount = tcgOnly ? double.NaN : Best(repeats, () => RunQemu(elf, icountMode: true)) - qemuStartup;

Console.WriteLine();
Console.WriteLine($"{"engine",-38} {"seconds",8} {"guest MIPS",11} {"ours/that",10}");
Row("ours (block compiler)", ours);
if (!tcgOnly) Row("ours (interpreter only)", interp);
Row("QEMU 7.2 TCG", qemu);
if (!tcgOnly) Row("QEMU 7.2 TCG -icount shift=0", qemuIcount);
Console.WriteLine($"(QEMU times exclude its start-up, measured on hello.elf: {qemuStartup:F3} s)");

void Row(string name, double seconds) =>
    Console.WriteLine($"{name,-38} {seconds,8:F3} {icount / seconds / 1e6,11:F1} {seconds / ours,10:F2}");

static double Best(int n, Func<double> run)
{
    double best = double.MaxValue;
    for (int i = 0; i < n; i++) best = Math.Min(best, run());
    return best;
}

static (ulong Icount, string Output) RunOurs(string elf, bool compile, out double seconds)
{
    var port = new CapturePort();
    using var m = new Machine(new MachineConfig(), port, compile);
    ElfLoader.Load(m, File.ReadAllBytes(elf));
    var sw = Stopwatch.StartNew();
    var reason = m.Run();
    seconds = sw.Elapsed.TotalSeconds;
    if (reason != StopReason.Exited || m.ExitCode != 0) throw new Exception($"guest did not pass: {reason} {m.ExitCode}");
    return (m.Icount, port.Output.ToString());
}

static double RunQemu(string elf, bool icountMode)
{
    var psi = new ProcessStartInfo("qemu-system-riscv64")
    {
        RedirectStandardOutput = true,
        RedirectStandardError = true,
        RedirectStandardInput = true,
    };
    foreach (var a in new[] { "-M", "virt", "-bios", "none", "-nographic", "-m", "128M", "-kernel", elf }) psi.ArgumentList.Add(a);
    if (icountMode) { psi.ArgumentList.Add("-icount"); psi.ArgumentList.Add("shift=0"); }
    var sw = Stopwatch.StartNew();
    using var p = Process.Start(psi) ?? throw new Exception("cannot start qemu-system-riscv64 (apt-get install qemu-system-misc)");
    p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    if (p.ExitCode != 0) throw new Exception($"qemu exited {p.ExitCode}");
    return sw.Elapsed.TotalSeconds;
}

static string FindRoot() => BenchRepo.Root;

/// <summary>Fixed time, no input: compute-style guests never read either.</summary>
sealed class CapturePort : IHostPort
{
    public System.Text.StringBuilder Output { get; } = new();
    public ulong NextPollIcount => ulong.MaxValue;
    public void Poll(Machine machine) { }
    public ulong ReadTime(Machine machine) => machine.Icount / 100;
    public bool WaitForInput(Machine machine) => false;
    public ushort ReadEntropy(Machine machine) => 0;
    public void SerialOutput(byte value) => Output.Append((char)value);
}
