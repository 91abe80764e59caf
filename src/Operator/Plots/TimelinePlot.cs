using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Reports;
using ScottPlot;

namespace LiveMigration.Operator.Plots;

public enum PlotFormat { Png, Svg }

/// <summary>
/// A migration's timeline drawn with ScottPlot: wire rate (left axis), replay lag and throttle
/// (right axes) against time, the downtime shaded and every strategy switch marked.
/// </summary>
public static class TimelinePlot
{
    public const int Width = 1000, Height = 420;

    /// <summary>PNG or SVG by the file's extension; anything else is a usage error.</summary>
    public static PlotFormat FormatOf(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".png" => PlotFormat.Png,
        ".svg" => PlotFormat.Svg,
        _ => throw new FormatException($"'{path}': a timeline is written as .png or .svg"),
    };

    public static void Write(MigrationReport report, string path)
    {
        var format = FormatOf(path);
        if (format == PlotFormat.Png) File.WriteAllBytes(path, Png(report));
        else File.WriteAllText(path, Svg(report));
    }

    public static byte[] Png(MigrationReport report, int width = Width, int height = Height) =>
        Build(report).GetImageBytes(width, height, ImageFormat.Png);

    public static string Svg(MigrationReport report, int width = Width, int height = Height) =>
        Build(report).GetSvgXml(width, height);

    private static Plot Build(MigrationReport r)
    {
        PlotFonts.Register();
        var plot = new Plot();
        plot.Font.Set(PlotFonts.Family);
        var samples = r.Timeline;
        double[] t = [.. samples.Select(s => s.T)];
        ScottPlot.IYAxis? throttleAxis = null;
        string outcome = r.Success ? $"{r.TotalSeconds:F2} s, downtime {r.DowntimeSeconds * 1000:F1} ms, {ByteSize.Human(r.BytesTotal)} sent" : "failed";
        plot.Title($"{(r.ResumedPostcopy ? "Post-copy resume" : "Migration")} of {r.Name} ({r.Strategy}): {outcome}", size: 16);
        plot.XLabel("time since the migration started (s)", size: 13);

        double rateMax = samples.Count > 0 ? samples.Max(s => s.BytesPerSecond) : 0;
        var (rateScale, rateUnit) = rateMax >= 1 << 30 ? (1.0 / (1 << 30), "GiB/s") : rateMax >= 1 << 20 ? (1.0 / (1 << 20), "MiB/s") : (1.0 / 1024, "KiB/s");
        plot.YLabel($"wire rate ({rateUnit})", size: 13);

        if (r.DowntimeSeconds > 0 && r.Success)
        {
            var down = plot.Add.HorizontalSpan(r.TotalSeconds - r.DowntimeSeconds, r.TotalSeconds);
            down.FillStyle.Color = Colors.Gold.WithAlpha(0.5);
            down.LegendText = $"downtime ({r.DowntimeSeconds * 1000:F1} ms)";
        }
        if (t.Length > 0)
        {
            var rate = plot.Add.Scatter(t, samples.Select(s => s.BytesPerSecond * rateScale).ToArray());
            rate.LegendText = "wire rate";
            rate.Color = Colors.SteelBlue;
            rate.LineWidth = 2;
            rate.MarkerSize = 0;
            rate.FillY = true;
            rate.FillYColor = Colors.SteelBlue.WithAlpha(0.25);

            if (samples.Any(s => s.ReplayLagSeconds > 0))
            {
                var lagAxis = plot.Axes.Right;
                lagAxis.Label.Text = "replay lag (ms)";
                lagAxis.Label.FontSize = 13;
                var lag = plot.Add.Scatter(t, samples.Select(s => s.ReplayLagSeconds * 1000).ToArray());
                lag.Axes.YAxis = lagAxis;
                lag.LegendText = "replay lag";
                lag.Color = Colors.FireBrick;
                lag.LineWidth = 2;
                lag.MarkerSize = 0;
            }
            if (samples.Any(s => s.Throttle > 0))
            {
                throttleAxis = plot.Axes.AddRightAxis();
                throttleAxis.Label.Text = "throttle (%)";
                throttleAxis.Label.FontSize = 13;
                var throttle = plot.Add.Scatter(t, samples.Select(s => s.Throttle * 100).ToArray());
                throttle.Axes.YAxis = throttleAxis;
                throttle.LegendText = "throttle";
                throttle.Color = Colors.SeaGreen;
                throttle.LineWidth = 2;
                throttle.LinePattern = LinePattern.Dashed;
                throttle.MarkerSize = 0;
            }
        }
        foreach (var s in r.Switches)
        {
            var line = plot.Add.VerticalLine(s.T);
            line.Color = Colors.DimGray;
            line.LinePattern = LinePattern.Dotted;
            line.Text = Strategies.Name(s.To);
            line.LabelFontSize = 12;
            line.LabelOppositeAxis = true;
        }
        plot.Axes.AutoScale();
        // Quantities are never negative: every axis starts at zero, with headroom above the peak.
        plot.Axes.SetLimitsX(0, Math.Max(r.TotalSeconds, t.Length > 0 ? t[^1] : 0.1));
        plot.Axes.SetLimitsY(0, Math.Max(1, rateMax * rateScale) * 1.1, plot.Axes.Left);
        double lagMax = samples.Count > 0 ? samples.Max(s => s.ReplayLagSeconds) * 1000 : 0;
        if (lagMax > 0) plot.Axes.SetLimitsY(0, lagMax * 1.1, plot.Axes.Right);
        if (throttleAxis != null) plot.Axes.SetLimitsY(0, 100, throttleAxis);
        plot.Axes.Bottom.TickLabelStyle.FontSize = 12;
        plot.Axes.Left.TickLabelStyle.FontSize = 12;
        plot.Axes.Right.TickLabelStyle.FontSize = 12;
        plot.Legend.FontSize = 12;
        plot.ShowLegend(Edge.Bottom);
        return plot;
    }
}
