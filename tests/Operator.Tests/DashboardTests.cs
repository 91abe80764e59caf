using LiveMigration.Tests.Shared;
using Microsoft.Playwright;
using static Microsoft.Playwright.Assertions;

namespace LiveMigration.Operator.Tests;

/// <summary>
/// The dashboard in a real browser: two hosts, a guest started from the page, a migration started
/// from the page, its progress arriving live, the report shown, the guest listed on the destination.
/// </summary>
public sealed class DashboardTests
{
    private static readonly float Long = 180_000;

    [Fact]
    public async Task A_migration_started_from_the_page_shows_live_progress_then_its_report_and_the_guest_on_the_destination()
    {
        using var hosts = new TwoHosts();
        await using var browser = await Browser.Launch();
        var page = await browser.Context.NewPageAsync();
        var requests = new List<string>();
        page.Request += (_, r) => { lock (requests) requests.Add(new Uri(r.Url).AbsolutePath); };
        SetDefaultExpectTimeout(60_000);

        await page.GotoAsync(hosts.DashboardA.Url);
        await Expect(page.Locator("#live")).ToHaveTextAsync("live");
        await Expect(page.Locator($"#hosts tr[data-host='{hosts.B.Address}']")).ToContainTextAsync("peer");

        // Start: the ELF goes up through the page's form.
        await page.Locator("#start summary").ClickAsync();
        await page.Locator("#start-form input[name=name]").FillAsync("web");
        await page.Locator("#start-form input[name=mem]").FillAsync("128M");
        await page.Locator("#start-form input[name=elf]").SetInputFilesAsync(RepoPaths.Guest("dirty_forever"));
        await page.Locator("#start-form button").ClickAsync();
        await Expect(page.Locator("#message")).ToContainTextAsync("started 'web'");
        var row = page.Locator($"#guests tr[data-host='{hosts.A.Address}'][data-guest='web']");
        await Expect(row).ToHaveAttributeAsync("data-state", "running");

        // Migrate: destination, strategy and a bandwidth cap that makes the checkpoint take seconds.
        await Expect(row.Locator("input.dest")).ToHaveValueAsync(hosts.B.Address);
        await row.Locator("select.strategy").SelectOptionAsync("auto");
        await row.Locator("input.bandwidth").FillAsync("100mbit");
        await row.Locator("button.migrate").ClickAsync();

        // Progress arrives over the event stream: the card updates again and again, bytes grow.
        var card = page.Locator(".migration[data-guest='web']");
        await Expect(card).ToBeVisibleAsync();
        int firstUpdates = int.Parse(await card.GetAttributeAsync("data-updates") ?? "0");
        long firstBytes = long.Parse(await card.GetAttributeAsync("data-bytes") ?? "0");
        await page.WaitForFunctionAsync("n => Number(document.querySelector('.migration')?.dataset.updates || 0) >= n", firstUpdates + 4,
            new PageWaitForFunctionOptions { Timeout = 60_000 });
        long laterBytes = long.Parse(await card.GetAttributeAsync("data-bytes") ?? "0");
        Assert.True(laterBytes > firstBytes, $"bytes sent did not grow between updates ({firstBytes} -> {laterBytes})");
        await Expect(card.Locator(".phase")).Not.ToBeEmptyAsync();
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Artifacts.File("dashboard-migrating.png"), FullPage = true });

        // The report: listed, shown with its timeline plot; the card is gone.
        var report = page.Locator("#reports tr[data-report]").First;
        await Expect(report).ToContainTextAsync("migrated", new LocatorAssertionsToContainTextOptions { Timeout = Long });
        await Expect(card).ToHaveCountAsync(0);
        await Expect(page.Locator("#report-detail")).ToContainTextAsync("verified");
        await page.WaitForFunctionAsync("() => { const i = document.querySelector('#report-detail img.timeline'); return i && i.complete && i.naturalWidth > 0; }",
            null, new PageWaitForFunctionOptions { Timeout = 60_000 });
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Artifacts.File("dashboard-report.png"), FullPage = true });

        // The guest is listed on the destination, on this page (B is A's peer) and on B's own.
        await Expect(page.Locator($"#guests tr[data-host='{hosts.B.Address}'][data-guest='web']")).ToHaveAttributeAsync("data-state", "running");
        await Expect(row).ToHaveAttributeAsync("data-state", "moved");
        var pageB = await browser.Context.NewPageAsync();
        await pageB.GotoAsync(hosts.DashboardB.Url);
        await Expect(pageB.Locator($"#guests tr[data-host='{hosts.B.Address}'][data-guest='web']")).ToHaveAttributeAsync("data-state", "running");
        await pageB.ScreenshotAsync(new PageScreenshotOptions { Path = Artifacts.File("dashboard-destination.png"), FullPage = true });

        // The host kept the report in its data directory.
        var stored = Assert.Single(hosts.A.Reports.All());
        Assert.True(stored.Success);
        Assert.True(File.Exists(Path.Combine(hosts.A.Reports.Folder!, stored.MigrationId + ".json")));

        // Live means pushed: one event stream, no status polling.
        lock (requests)
        {
            Assert.Equal(1, requests.Count(p => p == "/api/events"));
            Assert.DoesNotContain("/api/status", requests);
        }
    }
}
