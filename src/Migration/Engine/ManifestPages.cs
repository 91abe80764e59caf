using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>The pages a post-copy manifest lists: written as runs, read back as runs or as one array.</summary>
internal static class ManifestPages
{
    /// <summary>Adds <paramref name="pages"/> (ascending) to <paramref name="manifest"/> as runs.</summary>
    public static void AddRuns(PostcopyManifest manifest, IReadOnlyList<int> pages)
    {
        for (int i = 0; i < pages.Count;)
        {
            int first = pages[i], n = 1;
            while (i + n < pages.Count && pages[i + n] == first + n) n++;
            AddRun(manifest, first, n);
            i += n;
        }
    }

    public static void AddRun(PostcopyManifest manifest, int first, int count)
    {
        manifest.RunFirst.Add((uint)first);
        manifest.RunCount.Add((uint)count);
    }

    /// <summary>
    /// The listed pages as runs (single pages as runs of one), checked against <paramref name="pageCount"/>;
    /// throws on malformed runs. Cheap: nothing is expanded (the switchover calls it).
    /// </summary>
    public static List<(int First, int Count)> Runs(PostcopyManifest manifest, int pageCount, out int total)
    {
        if (manifest.RunFirst.Count != manifest.RunCount.Count) throw new ProtocolException("post-copy manifest with mismatched run lists");
        var runs = new List<(int, int)>(manifest.Pages.Count + manifest.RunFirst.Count);
        long sum = 0;
        foreach (uint p in manifest.Pages) { runs.Add((Check(p, pageCount), 1)); sum++; }
        for (int r = 0; r < manifest.RunFirst.Count; r++)
        {
            uint first = manifest.RunFirst[r], n = manifest.RunCount[r];
            if (n == 0) continue;
            Check((ulong)first + n - 1, pageCount);
            runs.Add(((int)first, (int)n));
            sum += n;
        }
        if (sum > pageCount) throw new ProtocolException($"post-copy manifest lists {sum} pages, memory has {pageCount}");
        total = (int)sum;
        return runs;
    }

    /// <summary>Every listed page, in order; throws as <see cref="Runs"/> does.</summary>
    public static int[] Expand(PostcopyManifest manifest, int pageCount)
    {
        var runs = Runs(manifest, pageCount, out int total);
        var pages = new int[total];
        int k = 0;
        foreach (var (first, count) in runs)
            for (int i = 0; i < count; i++) pages[k++] = first + i;
        return pages;
    }

    private static int Check(ulong page, int pageCount) =>
        page < (ulong)pageCount ? (int)page : throw new ProtocolException($"post-copy manifest names page {page}, beyond the end of memory ({pageCount} pages)");
}
