namespace LiveMigration.Trace.Tests;

/// <summary>
/// Our snapshot-test helper: compares received bytes with the verified file in traces/. On a
/// mismatch it writes NAME.received.EXT beside it (git-ignored) and fails; with LM_ACCEPT=1 in the
/// environment it overwrites the verified file instead (review the diff, then commit).
/// </summary>
public static class Snapshot
{
    public static bool Accepting => Environment.GetEnvironmentVariable("LM_ACCEPT") == "1";

    public static void Match(string fileName, byte[] received)
    {
        string verified = Path.Combine(Repo.Traces, fileName);
        string ext = Path.GetExtension(fileName);
        string receivedPath = Path.Combine(Repo.Traces, Path.GetFileNameWithoutExtension(fileName) + ".received" + ext);
        bool same = File.Exists(verified) && File.ReadAllBytes(verified).AsSpan().SequenceEqual(received);
        if (same)
        {
            if (File.Exists(receivedPath)) File.Delete(receivedPath);
            return;
        }
        if (Accepting)
        {
            Directory.CreateDirectory(Repo.Traces);
            File.WriteAllBytes(verified, received);
            if (File.Exists(receivedPath)) File.Delete(receivedPath);
            return;
        }
        File.WriteAllBytes(receivedPath, received);
        Assert.Fail(File.Exists(verified)
            ? $"{fileName} changed: compare {receivedPath} with {verified}; if the change is intended, rerun with LM_ACCEPT=1 (and bump TraceFormat.CurrentVersion if the format changed)"
            : $"{fileName} has no verified file yet: review {receivedPath}, then rerun with LM_ACCEPT=1");
    }
}
