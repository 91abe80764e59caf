namespace LiveMigration.Migration.Transport;

/// <summary>Link rates as the user writes them (what <see cref="TokenBucket"/> enforces).</summary>
public static class Bandwidth
{
    /// <summary>
    /// Parses a bandwidth: "1gbit", "100mbit", "1Gbps" are bits per second; "125MB", "10MiB", "65536"
    /// are bytes per second; "0" or "unlimited" means no limit. Returns bytes per second.
    /// </summary>
    public static ulong Parse(string text)
    {
        string t = text.Trim().ToLowerInvariant().Replace("/s", "").Replace("ps", "it");
        if (t is "0" or "unlimited" or "") return 0;
        bool bits = t.EndsWith("bit");
        if (bits) t = t[..^3];
        else if (t.EndsWith("ib")) t = t[..^2] + "i";
        else if (t.EndsWith('b')) t = t[..^1];
        double mult = 1;
        bool binary = t.EndsWith('i');
        if (binary) t = t[..^1];
        if (t.EndsWith('k')) mult = binary ? 1 << 10 : 1e3;
        else if (t.EndsWith('m')) mult = binary ? 1 << 20 : 1e6;
        else if (t.EndsWith('g')) mult = binary ? 1 << 30 : 1e9;
        if (mult != 1) t = t[..^1];
        if (!double.TryParse(t, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double n) || n < 0)
            throw new FormatException($"'{text}' is not a rate (examples: 1gbit, 100mbit, 125MB, 0 for unlimited)");
        double bytes = n * mult / (bits ? 8 : 1);
        return (ulong)bytes;
    }
}
