using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Tests;

/// <summary>The decision alone: GO and abort exclude each other, and the commit step runs at most once.</summary>
public sealed class SwitchoverDecisionTests
{
    [Fact]
    public void A_commit_that_succeeds_is_go_and_a_later_abort_loses()
    {
        var d = new SwitchoverDecision();
        int runs = 0;
        Assert.True(d.TryCommit(() => { runs++; return true; }));
        Assert.Equal(Decision.Go, d.Value);
        Assert.False(d.TakeAbort());
        Assert.True(d.TryCommit(() => { runs++; return true; })); // already GO: not run again
        Assert.Equal(1, runs);
    }

    [Fact]
    public void An_abort_first_keeps_the_commit_step_from_running()
    {
        var d = new SwitchoverDecision();
        Assert.True(d.TakeAbort());
        Assert.True(d.TakeAbort()); // abort again: still abort
        bool ran = false;
        Assert.False(d.TryCommit(() => ran = true));
        Assert.False(ran);
        Assert.Equal(Decision.Abort, d.Value);
    }

    [Fact]
    public void A_refused_commit_ends_as_abort()
    {
        var d = new SwitchoverDecision();
        Assert.False(d.TryCommit(() => false));
        Assert.Equal(Decision.Abort, d.Value);
        Assert.True(d.TakeAbort());
    }

    [Fact]
    public void A_commit_step_that_throws_ends_as_abort()
    {
        var d = new SwitchoverDecision();
        Assert.Throws<IOException>(() => d.TryCommit(() => throw new IOException("store unreachable")));
        Assert.Equal(Decision.Abort, d.Value);
    }

    /// <summary>An abort that comes while the commit step runs (a slow ownership transaction) waits for its verdict and follows it.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void An_abort_during_the_commit_step_waits_and_follows_it(bool commitSucceeds)
    {
        var d = new SwitchoverDecision();
        using var inStep = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var committer = new Thread(() => d.TryCommit(() => { inStep.Set(); release.Wait(); return commitSucceeds; }));
        committer.Start();
        Assert.True(inStep.Wait(5000));
        bool? aborted = null;
        var aborter = new Thread(() => aborted = d.TakeAbort());
        aborter.Start();
        Assert.False(aborter.Join(200)); // blocked while the step runs
        Assert.Equal(Decision.Pending, d.Value);
        release.Set();
        Assert.True(aborter.Join(5000));
        committer.Join();
        Assert.Equal(!commitSucceeds, aborted);
        Assert.Equal(commitSucceeds ? Decision.Go : Decision.Abort, d.Value);
    }

    /// <summary>Two threads that both try to commit (the ACK reader and the main thread): the step runs once, both see its verdict.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_second_committer_waits_for_the_first_ones_verdict(bool commitSucceeds)
    {
        var d = new SwitchoverDecision();
        using var inStep = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        int runs = 0;
        var first = new Thread(() => d.TryCommit(() => { Interlocked.Increment(ref runs); inStep.Set(); release.Wait(); return commitSucceeds; }));
        first.Start();
        Assert.True(inStep.Wait(5000));
        bool? second = null;
        var other = new Thread(() => second = d.TryCommit(() => { Interlocked.Increment(ref runs); return true; }));
        other.Start();
        Assert.False(other.Join(200));
        release.Set();
        Assert.True(other.Join(5000));
        first.Join();
        Assert.Equal(commitSucceeds, second);
        Assert.Equal(1, runs);
    }
}
