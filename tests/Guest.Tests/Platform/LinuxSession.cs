using System.Globalization;
using System.Text.RegularExpressions;

namespace LiveMigration.Guest.Tests.Platform;

/// <summary>
/// One session with the Linux guest on its console, the same under QEMU and under ours: boot to the
/// banner, the kv protocol, the command loop, poweroff. Returns the kernel version and boot time the banner reported.
/// </summary>
public static partial class LinuxSession
{
    public static readonly TimeSpan Boot = TimeSpan.FromMinutes(3), Reply = TimeSpan.FromSeconds(30);

    public static (string Release, double BootSeconds) Run(ConsoleProcess guest)
    {
        string boot = guest.WaitFor("kv ready\n", Boot);
        var banner = BannerLine().Match(boot);
        Assert.True(banner.Success, $"no banner in:\n{boot}");
        Assert.StartsWith("6.1.", banner.Groups["release"].Value);
        double seconds = double.Parse(banner.Groups["seconds"].Value, CultureInfo.InvariantCulture);
        Assert.InRange(seconds, 0.001, 180);
        Assert.Contains("Machine model: riscv-virtio,qemu", boot);
        Assert.Contains("OpenSBI", boot);

        Assert.Equal("OK", guest.Ask("SET greeting hello world", Reply));
        Assert.Equal("hello world", guest.Ask("GET greeting", Reply));
        Assert.Equal("NOTFOUND", guest.Ask("GET missing", Reply));
        Assert.Equal("ERR", guest.Ask("BOGUS", Reply));
        Assert.Equal("OK", guest.Ask("DEL greeting", Reply));
        Assert.Equal("keys 0 sets 1 gets 2 dels 1", guest.Ask("STATS", Reply));
        Assert.Matches(@"^up \d+\.\d\d s idle \d+\.\d\d s$", guest.Ask("uptime", Reply));
        guest.Send("free");
        string free = guest.WaitFor("MemAvailable:", Reply) + guest.WaitFor("\n", Reply);
        Assert.Contains("MemTotal:", free);

        guest.Send("cat /proc/interrupts");
        guest.Send("STATS"); // a marker after the file
        string interrupts = guest.WaitFor("keys 0 sets 1 gets 2 dels 1\n", Reply);
        Assert.Contains("ttyS0", interrupts);
        Assert.Contains("virtio0", interrupts); // rng and balloon probed on their slots
        Assert.Contains("virtio1", interrupts);

        guest.Send("poweroff");
        Assert.Equal(0, guest.WaitForExit(Reply));
        return (banner.Groups["release"].Value, seconds);
    }

    /// <summary>
    /// The console with what legitimately differs between two runs taken out: kernel timestamps, the
    /// times and counters the session prints, and the order of lines (async initcalls such as the
    /// initramfs unpacking interleave by timing). Lines are compared as a sorted list.
    /// </summary>
    public static List<string> Normalised(string console) =>
    [
        .. console.Replace("\r", "").Split('\n')
            .Select(l => Timestamp().Replace(l, "[T] "))
            .Select(l => Spaces().Replace(Numbers().Replace(l, "N"), " ")) // columns pad by the numbers' widths
            .Where(l => l.Length > 0 && !l.Contains("terminating on signal"))
            .Order(StringComparer.Ordinal),
    ];

    [GeneratedRegex(@"LM Linux guest: Linux (?<release>\S+) .*, booted in (?<seconds>\d+\.\d+) s")]
    private static partial Regex BannerLine();

    [GeneratedRegex(@"^\[ *\d+\.\d+\] ")]
    private static partial Regex Timestamp();

    // Uptime, idle time, free memory and interrupt counts vary with timing, not with the machine.
    [GeneratedRegex(@"\d+(\.\d+)?")]
    private static partial Regex Numbers();

    [GeneratedRegex(@" {2,}")]
    private static partial Regex Spaces();
}
