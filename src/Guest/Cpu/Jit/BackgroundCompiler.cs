using System.Collections.Concurrent;

namespace LiveMigration.Guest.Cpu.Jit;

/// <summary>
/// One process-wide thread that emits and JIT-compiles the blocks guest threads ask for, so a guest
/// never stops for the IL compiler: booting Linux compiles thousands of blocks, and compiling them
/// inline cost three times the boot itself. The guest keeps interpreting meanwhile; its own thread
/// installs a finished block between slices, and only if the code under it was not written since
/// (<see cref="BlockCache"/>), so when a block appears changes speed, never behaviour.
/// </summary>
internal static class BackgroundCompiler
{
    internal sealed record Request(BlockCache Cache, int Page, int Slot, ulong Tag, int PageGeneration, int Epoch, BlockCompiler.DecodedBlock Block);

    // Bounded: a guest that outruns the compiler keeps interpreting rather than queueing without end.
    private static readonly BlockingCollection<Request> Queue = new(new ConcurrentQueue<Request>(), 4096);
    private static readonly Lazy<Thread> Worker = new(() =>
    {
        var t = new Thread(Run) { IsBackground = true, Name = "block compiler", Priority = ThreadPriority.BelowNormal };
        t.Start();
        return t;
    });

    /// <summary>Queues a block; false when the queue is full (the caller may ask again later).</summary>
    public static bool TryEnqueue(Request request)
    {
        _ = Worker.Value;
        return Queue.TryAdd(request);
    }

    private static void Run()
    {
        foreach (var request in Queue.GetConsumingEnumerable())
        {
            if (request.Cache.IsStale(request)) continue; // its machine is gone or the code changed
            BlockFn? fn;
            try
            {
                fn = request.Block.Compile();
                unsafe { fn(null, null, null, null, BlockCompiler.WarmUpBudget, null); } // DynamicMethods are JIT-compiled at their first call
            }
            catch (InvalidProgramException) { fn = null; } // left to the interpreter, as an uncompilable block
            request.Cache.Complete(request, fn);
        }
    }
}
