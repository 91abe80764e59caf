using ScottPlot;

namespace LiveMigration.Operator.Plots;

/// <summary>
/// ScottPlot's SkiaSharp build has no fontconfig, so fonts are registered from their files: a
/// plot's text renders the same on every machine that has Debian's fonts-dejavu-core.
/// </summary>
internal static class PlotFonts
{
    public const string Family = "DejaVu Sans";
    private const string Folder = "/usr/share/fonts/truetype/dejavu";
    private static readonly Lazy<bool> Registered = new(() =>
    {
        string regular = Path.Combine(Folder, "DejaVuSans.ttf"), bold = Path.Combine(Folder, "DejaVuSans-Bold.ttf");
        if (!File.Exists(regular) || !File.Exists(bold))
            throw new FileNotFoundException($"no DejaVu Sans in {Folder} for the plots: install Debian's fonts-dejavu-core (scripts/setup.sh does)");
        Fonts.AddFontFile(Family, regular, bold: false, italic: false);
        Fonts.AddFontFile(Family, bold, bold: true, italic: false);
        return true;
    });

    public static void Register() => _ = Registered.Value;
}
