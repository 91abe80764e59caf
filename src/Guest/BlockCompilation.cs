namespace LiveMigration.Guest;

/// <summary>Whether a machine compiles its hot blocks to IL, and on which thread. Speed only: every choice runs the guest identically.</summary>
public enum BlockCompilation
{
    /// <summary>Interpret every instruction.</summary>
    Off,
    /// <summary>Compile on the guest's own thread when a block turns hot (it is used from its next entry on).</summary>
    Inline,
    /// <summary>Compile on a shared background thread; the guest keeps interpreting the block until it is ready.</summary>
    Background,
}
