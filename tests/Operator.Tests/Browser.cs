using Microsoft.Playwright;

namespace LiveMigration.Operator.Tests;

/// <summary>
/// Debian's chromium driven by Playwright (no browser download): a fresh profile per test, and
/// the switches that keep a headless run from reaching out to the network.
/// </summary>
public sealed class Browser : IAsyncDisposable
{
    public const string Chromium = "/usr/bin/chromium";
    private readonly IPlaywright _playwright;
    private readonly string _profile;

    private Browser(IPlaywright playwright, IBrowserContext context, string profile)
    {
        _playwright = playwright;
        Context = context;
        _profile = profile;
    }

    public IBrowserContext Context { get; }

    public static async Task<Browser> Launch()
    {
        if (!File.Exists(Chromium)) throw new FileNotFoundException($"{Chromium} is missing: scripts/setup.sh installs Debian's chromium");
        var playwright = await Playwright.CreateAsync();
        string profile = Directory.CreateTempSubdirectory("lm-chromium-").FullName;
        var context = await playwright.Chromium.LaunchPersistentContextAsync(profile, new BrowserTypeLaunchPersistentContextOptions
        {
            ExecutablePath = Chromium,
            Headless = true,
            Args =
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
            ],
            ViewportSize = new ViewportSize { Width = 1400, Height = 1000 },
        });
        return new Browser(playwright, context, profile);
    }

    public async ValueTask DisposeAsync()
    {
        await Context.DisposeAsync();
        _playwright.Dispose();
        try { Directory.Delete(_profile, recursive: true); } catch (IOException) { }
    }
}
