using LiveMigration.Migration.Engine;

namespace LiveMigration.Migration.Tests;

/// <summary>
/// The disk directory's check is the open (<see cref="DiskPaths.Confine"/>): a link swapped in after
/// the check has passed is never walked. (The escape cases before any swap are in DiskMigrationTests.)
/// </summary>
public sealed class DiskPathsTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("lm-confine-").FullName;
    private readonly string _outside = Directory.CreateTempSubdirectory("lm-confine-out-").FullName;

    public void Dispose()
    {
        Directory.Delete(_root, true);
        Directory.Delete(_outside, true);
    }

    [Fact]
    public void A_directory_swapped_for_a_link_after_the_check_changes_nothing_the_file_lands_in_the_checked_directory()
    {
        string sub = Path.Combine(_root, "guests");
        Directory.CreateDirectory(sub);
        using var confined = DiskPaths.Confine(_root, Path.Combine("guests", "g.img"), "disk path");
        // The swap: the checked directory moves away and a link to the outside takes its name.
        Directory.Move(sub, Path.Combine(_root, "moved"));
        Directory.CreateSymbolicLink(sub, _outside);

        using (var h = confined.CreateSibling("g.img.partial"))
            RandomAccess.Write(h, "data"u8, 0);
        confined.ReplaceWith("g.img.partial");

        Assert.Empty(Directory.GetFileSystemEntries(_outside)); // nothing went through the link
        Assert.Equal("data", File.ReadAllText(Path.Combine(_root, "moved", "g.img")));
        // A fresh check now sees the link and refuses in one line.
        var e = Assert.Throws<MigrationFailedException>(() => DiskPaths.Confine(_root, Path.Combine("guests", "g.img"), "disk path"));
        Assert.Contains("is outside this host's disk directory", e.Message);
        Assert.Contains("is a symbolic link", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void A_final_component_swapped_for_a_link_after_the_check_is_refused_at_open()
    {
        string img = Path.Combine(_root, "g.img"), secret = Path.Combine(_outside, "secret.img");
        File.WriteAllText(img, "mine");
        File.WriteAllText(secret, "not yours");
        using var confined = DiskPaths.Confine(_root, img, "disk path");
        Assert.True(confined.IsFile());
        File.Delete(img);
        File.CreateSymbolicLink(img, secret);

        var e = Assert.Throws<MigrationFailedException>(() => confined.Open(writable: true));
        Assert.Contains("is outside this host's disk directory", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(confined.IsFile());
        Assert.Equal("not yours", File.ReadAllText(secret));
    }

    [Fact]
    public void A_path_through_a_link_that_stays_inside_is_refused_too_and_a_plain_one_opens()
    {
        Directory.CreateDirectory(Path.Combine(_root, "real"));
        Directory.CreateSymbolicLink(Path.Combine(_root, "alias"), Path.Combine(_root, "real"));
        var e = Assert.Throws<MigrationFailedException>(() => DiskPaths.Confine(_root, Path.Combine("alias", "g.img"), "disk path"));
        Assert.Contains("alias is a symbolic link", e.Message);
        var missing = Assert.Throws<MigrationFailedException>(() => DiskPaths.Confine(_root, Path.Combine("nope", "g.img"), "disk path"));
        Assert.Contains("its directory does not exist on this host", missing.Message);

        using var ok = DiskPaths.Confine(_root, Path.Combine(_root, "real", "g.img"), "disk path");
        Assert.Equal(Path.Combine(_root, "real", "g.img"), ok.Path);
        Assert.False(ok.IsFile());
        using (var h = ok.CreateSibling("g.img")) RandomAccess.Write(h, "x"u8, 0);
        Assert.True(ok.IsFile());
        using (var h = ok.Open(writable: false)) Assert.Equal(1, RandomAccess.GetLength(h));
    }
}
