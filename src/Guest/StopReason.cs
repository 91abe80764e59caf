namespace LiveMigration.Guest;

/// <summary>Why <see cref="Machine.Run"/> returned.</summary>
public enum StopReason
{
    /// <summary>The guest wrote the finisher; <see cref="Machine.ExitCode"/> holds its code.</summary>
    Exited,
    /// <summary>The requested icount was reached.</summary>
    InstructionLimit,
    /// <summary><see cref="Machine.RequestStop"/> was called.</summary>
    StopRequested,
    /// <summary>The hart waits for an interrupt that no input can ever raise.</summary>
    Idle,
    /// <summary>
    /// Post-copy: the next instruction touches a page that has not arrived and cannot be fetched now
    /// (<see cref="Memory.GuestMemory.PageFetcher"/> returned false), or a disk request needs a block
    /// that cannot (<see cref="Devices.Virtio.Block.Disk.BlockFetcher"/>). Nothing of it executed;
    /// running again retries it.
    /// </summary>
    PageUnavailable,
    /// <summary>A breakpoint or watchpoint hit; see <see cref="Debug.DebugHooks.LastStop"/>.</summary>
    Debug,
}
