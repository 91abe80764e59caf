namespace LiveMigration.Migration.Protocol;

/// <summary>
/// The one rule for names that enter from outside (guests, certificate holders): 1..64 characters of
/// [A-Za-z0-9._-], starting with a letter or digit. Names become file names (reports), log text and
/// status keys, so a slash, a newline or 5,000 characters must never get in.
/// </summary>
public static class Names
{
    public const int MaxLength = 64;

    /// <summary>Why <paramref name="name"/> is not acceptable, or null.</summary>
    public static string? Problem(string? name, string what = "guest name")
    {
        if (string.IsNullOrEmpty(name)) return $"a {what} is required";
        if (name.Length > MaxLength) return $"{what} of {name.Length} characters is too long (at most {MaxLength})";
        if (!char.IsAsciiLetterOrDigit(name[0])) return $"{what} '{Printable(name)}' must start with a letter or digit";
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
                return $"{what} '{Printable(name)}' may contain only letters, digits, '.', '_' and '-'";
        return null;
    }

    /// <summary>Throws a <see cref="FormatException"/> with a one-line message when the name is not acceptable.</summary>
    public static string Check(string? name, string what = "guest name") =>
        Problem(name, what) is { } why ? throw new FormatException(why) : name!;

    /// <summary>A name safe to echo in one log line: control characters escaped, cut at 80 characters.</summary>
    public static string Printable(string s)
    {
        var sb = new System.Text.StringBuilder();
        foreach (char c in s.Length > 80 ? s[..80] : s)
            sb.Append(c is < ' ' or (> '~' and < '\u00a0') ? $"\\x{(int)c:x2}" : c.ToString());
        if (s.Length > 80) sb.Append('…');
        return sb.ToString();
    }
}
