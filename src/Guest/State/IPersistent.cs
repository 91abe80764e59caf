namespace LiveMigration.Guest.State;

/// <summary>A component whose state saves and restores as one versioned section.</summary>
public interface IPersistent
{
    void Save(StateWriter writer);

    /// <summary>
    /// Reads and checks the whole section without changing the component; the returned action
    /// applies it and cannot fail. A whole-machine restore prepares every section before it applies
    /// any, so a bad byte anywhere leaves the machine exactly as it was.
    /// </summary>
    Action PrepareRestore(StateReader reader);

    /// <summary>Prepares and applies in one go (nothing changes when the section is bad).</summary>
    void Restore(StateReader reader);
}
