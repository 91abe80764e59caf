using System.Globalization;
using System.Text;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Reports;

/// <summary>
/// Draws a migration's timeline as a standalone SVG: bytes/s on the wire (left axis, filled) and
/// replay lag (right axis, line) against time, with the source's pause marked.
/// </summary>
public static class TimelineSvg
{
    public static string Render(MigrationReport r)
    {
        const int W = 800, H = 320, L = 70, R = 70, T = 40, B = 40;
        var inv = CultureInfo.InvariantCulture;
        var samples = r.Timeline.ToList();
        double tMax = Math.Max(r.TotalSeconds, samples.Count > 0 ? samples[^1].T : 0.1);
        if (tMax <= 0) tMax = 0.1;
        double rateMax = Math.Max(1, samples.Count > 0 ? samples.Max(s => s.BytesPerSecond) : 1);
        double lagMax = Math.Max(0.001, samples.Count > 0 ? samples.Max(s => s.ReplayLagSeconds) : 0.001);
        double X(double t) => L + t / tMax * (W - L - R);
        double Y1(double v) => H - B - v / rateMax * (H - T - B);
        double Y2(double v) => H - B - v / lagMax * (H - T - B);

        var sb = new StringBuilder();
        sb.Append(inv, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"11\">\n");
        sb.Append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        sb.Append(inv, $"<text x=\"{L}\" y=\"20\" font-size=\"14\">Migration of {Escape(r.Name)} ({Engine.Strategies.Name(r.Strategy)}): {r.TotalSeconds:F2} s total, downtime {r.DowntimeSeconds * 1000:F1} ms</text>\n");
        sb.Append(inv, $"<line x1=\"{L}\" y1=\"{H - B}\" x2=\"{W - R}\" y2=\"{H - B}\" stroke=\"black\"/>\n");
        sb.Append(inv, $"<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{H - B}\" stroke=\"black\"/>\n");
        sb.Append(inv, $"<line x1=\"{W - R}\" y1=\"{T}\" x2=\"{W - R}\" y2=\"{H - B}\" stroke=\"black\"/>\n");
        for (int i = 0; i <= 4; i++)
        {
            double f = i / 4.0;
            sb.Append(inv, $"<text x=\"{L - 5}\" y=\"{Y1(rateMax * f) + 4:F1}\" text-anchor=\"end\">{Human(rateMax * f)}/s</text>\n");
            sb.Append(inv, $"<text x=\"{W - R + 5}\" y=\"{Y2(lagMax * f) + 4:F1}\" fill=\"#c0392b\">{lagMax * f * 1000:F1} ms</text>\n");
            sb.Append(inv, $"<text x=\"{X(tMax * f):F1}\" y=\"{H - B + 15}\" text-anchor=\"middle\">{tMax * f:F2} s</text>\n");
        }
        if (samples.Count > 0)
        {
            var area = new StringBuilder();
            area.Append(inv, $"M{X(0):F1},{Y1(0):F1} ");
            foreach (var s in samples) area.Append(inv, $"L{X(s.T):F1},{Y1(s.BytesPerSecond):F1} ");
            area.Append(inv, $"L{X(samples[^1].T):F1},{Y1(0):F1} Z");
            sb.Append(inv, $"<path d=\"{area}\" fill=\"#3498db\" fill-opacity=\"0.5\" stroke=\"#2471a3\"/>\n");
            var lag = new StringBuilder();
            for (int i = 0; i < samples.Count; i++)
                lag.Append(inv, $"{(i == 0 ? 'M' : 'L')}{X(samples[i].T):F1},{Y2(samples[i].ReplayLagSeconds):F1} ");
            sb.Append(inv, $"<path d=\"{lag}\" fill=\"none\" stroke=\"#c0392b\" stroke-width=\"2\"/>\n");
            if (samples.Any(s => s.Throttle > 0))
            {
                // Throttle on the same right-hand scale, as a fraction of its height (0..100 %).
                var thr = new StringBuilder();
                for (int i = 0; i < samples.Count; i++)
                    thr.Append(inv, $"{(i == 0 ? 'M' : 'L')}{X(samples[i].T):F1},{H - B - samples[i].Throttle * (H - T - B):F1} ");
                sb.Append(inv, $"<path d=\"{thr}\" fill=\"none\" stroke=\"#27ae60\" stroke-width=\"1.5\" stroke-dasharray=\"4 2\"/>\n");
                sb.Append(inv, $"<text x=\"{W - R - 5}\" y=\"{T + 26}\" text-anchor=\"end\" fill=\"#27ae60\">throttle (0..100 % of height)</text>\n");
            }
        }
        double pause = r.TotalSeconds - r.DowntimeSeconds;
        if (r.DowntimeSeconds > 0)
            sb.Append(inv, $"<rect x=\"{X(pause):F1}\" y=\"{T}\" width=\"{Math.Max(1, X(r.TotalSeconds) - X(pause)):F1}\" height=\"{H - T - B}\" fill=\"#f1c40f\" fill-opacity=\"0.4\"><title>downtime</title></rect>\n");
        sb.Append(inv, $"<text x=\"{L + 5}\" y=\"{T + 12}\" fill=\"#2471a3\">bytes/s on the wire</text>\n");
        sb.Append(inv, $"<text x=\"{W - R - 5}\" y=\"{T + 12}\" text-anchor=\"end\" fill=\"#c0392b\">replay lag</text>\n");
        sb.Append(inv, $"<text x=\"{X(pause):F1}\" y=\"{T - 3}\" fill=\"#b7950b\">pause</text>\n");
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    public static string Human(double bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        int u = 0;
        while (bytes >= 1024 && u < units.Length - 1) { bytes /= 1024; u++; }
        return u == 0 ? $"{bytes:F0} {units[u]}" : $"{bytes:F1} {units[u]}";
    }

    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");
}
