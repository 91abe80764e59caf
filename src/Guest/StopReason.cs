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
    /// <summary>A breakpoint or watchpoint hit; see <see cref="Debug.DebugHooks.LastStop"/>.</summary>
    Debug,
}
