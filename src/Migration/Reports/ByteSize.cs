namespace LiveMigration.Migration.Reports;

public static class ByteSize
{
    /// <summary>Bytes in binary units for people: "512 B", "3.4 MiB".</summary>
    public static string Human(double bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        int u = 0;
        while (bytes >= 1024 && u < units.Length - 1) { bytes /= 1024; u++; }
        return u == 0 ? $"{bytes:F0} {units[u]}" : $"{bytes:F1} {units[u]}";
    }
}
