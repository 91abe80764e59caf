using System.Text;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Platform;

/// <summary>A device tree as dtc decodes it: node paths in order, and "path:property" → value text.</summary>
public sealed record Dts(List<string> Nodes, Dictionary<string, string> Properties)
{
    /// <summary>Decodes a DTB with <c>dtc -I dtb -O dts</c> (failing the test on any dtc error); returns dtc's warnings too.</summary>
    public static (Dts Tree, string[] Warnings) DecodeWithWarnings(byte[] dtb)
    {
        string file = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(file, dtb);
            var r = Tool.Run("dtc", ["-q", "-I", "dtb", "-O", "dts", file]);
            Assert.True(r.ExitCode == 0, $"dtc failed: {r.Stderr}");
            var check = Tool.Run("dtc", ["-I", "dtb", "-O", "dtb", "-o", "/dev/null", file]);
            string[] warnings = check.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => l.Replace(file, "").Replace("/dev/null", "").Trim(':', ' ')).ToArray();
            return (Parse(Encoding.ASCII.GetString(r.Stdout)), warnings);
        }
        finally { File.Delete(file); }
    }

    public static Dts Decode(byte[] dtb) => DecodeWithWarnings(dtb).Tree;

    /// <summary>Parses dtc's output: one node opening or property per line.</summary>
    public static Dts Parse(string text)
    {
        var nodes = new List<string>();
        var props = new Dictionary<string, string>();
        var path = new Stack<string>();
        foreach (string raw in text.Split('\n'))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith("/dts-v1/")) continue;
            if (line.EndsWith('{'))
            {
                string name = line[..^1].Trim();
                path.Push(name == "/" ? "" : name);
                nodes.Add(Current(path));
            }
            else if (line == "};") path.Pop();
            else if (line.EndsWith(';'))
            {
                string body = line[..^1];
                int eq = body.IndexOf(" = ", StringComparison.Ordinal);
                string key = eq < 0 ? body : body[..eq];
                props[$"{Current(path)}:{key}"] = eq < 0 ? "" : body[(eq + 3)..];
            }
        }
        return new Dts(nodes, props);
    }

    private static string Current(Stack<string> path) => "/" + string.Join("/", path.Reverse().Where(p => p.Length > 0));
}
