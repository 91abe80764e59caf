using System.Text;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Reports;
using LiveMigration.Operator.Plots;

namespace LiveMigration.Operator.Tests;

public sealed class PlotTests
{
    private static MigrationReport Report()
    {
        var r = new MigrationReport
        {
            Name = "kv", Strategy = Strategy.Auto, Success = true, TotalSeconds = 2.0, DowntimeSeconds = 0.004, MigrationId = "0123456789abcdef",
            BytesCheckpoint = 10 << 20, BytesLog = 1 << 20,
        };
        for (int i = 0; i <= 20; i++)
            r.Timeline.Add(new TimelineSample { T = i * 0.1, BytesPerSecond = 50e6 * Math.Sin(i / 6.0), ReplayLagSeconds = i * 0.0005, Throttle = i > 10 ? 0.3 : 0 });
        r.Switches.Add(new StrategySwitch { T = 0, To = Strategy.Log, Reason = "auto starts with log shipping" });
        r.Switches.Add(new StrategySwitch { T = 1.2, From = Strategy.Log, To = Strategy.Precopy, Reason = "replay fell behind" });
        ReportStore.Complete(r);
        return r;
    }

    [Fact]
    public void The_timeline_renders_as_png_and_as_svg_with_labels_and_legend()
    {
        var r = Report();
        byte[] png = TimelinePlot.Png(r);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
        Assert.True(png.Length > 10_000, $"a {png.Length}-byte PNG is too small to hold the plot");
        File.WriteAllBytes(Artifacts.File("timeline-synthetic.png"), png);

        string svg = TimelinePlot.Svg(r);
        Assert.StartsWith("<?xml", svg);
        // ScottPlot draws text as glyph paths in SVG unless fonts are embedded; the legend and labels
        // are checked through the PNG's size above and by eye in the artifact. The structure is an SVG.
        Assert.Contains("<svg", svg);
        Assert.True(Encoding.UTF8.GetByteCount(svg) > 5_000);
    }

    [Fact]
    public void A_timeline_is_written_as_png_or_svg_by_its_extension_only()
    {
        Assert.Equal(PlotFormat.Png, TimelinePlot.FormatOf("a/b.PNG"));
        Assert.Equal(PlotFormat.Svg, TimelinePlot.FormatOf("t.svg"));
        var e = Assert.Throws<FormatException>(() => TimelinePlot.FormatOf("t.pdf"));
        Assert.Contains(".png or .svg", e.Message);
    }
}
