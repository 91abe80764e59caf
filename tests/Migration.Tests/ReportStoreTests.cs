using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Reports;

namespace LiveMigration.Migration.Tests;

public sealed class ReportStoreTests
{
    [Fact]
    public void A_report_gets_its_total_and_units_and_survives_a_restart_of_the_store()
    {
        string dir = Directory.CreateTempSubdirectory("lm-reports-").FullName;
        try
        {
            var store = new ReportStore(dir);
            var r = new MigrationReport { MigrationId = "00112233aabbccdd", Name = "g", Success = true, BytesCheckpoint = 100, BytesLog = 20, BytesState = 3, BytesProtocol = 4, BytesPostcopy = 5 };
            store.Add(r);
            Assert.Equal(132UL, r.BytesTotal);
            Assert.Equal("bytes", r.Units.Bytes);
            Assert.Equal("seconds", r.Units.Time);
            Assert.NotEqual("", r.FinishedUtc);
            Assert.True(File.Exists(Path.Combine(dir, "reports", "00112233aabbccdd.json")));

            var again = new ReportStore(dir).Find("00112233aabbccdd");
            Assert.NotNull(again);
            Assert.Equal(r, again);
            Assert.Null(new ReportStore(dir).Find("ffffffffffffffff"));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Without_a_data_directory_reports_stay_in_memory()
    {
        var store = new ReportStore(null);
        store.Add(new MigrationReport { MigrationId = "a", Name = "g" });
        Assert.Null(store.Folder);
        Assert.Single(store.All());
    }
}
