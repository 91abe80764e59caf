namespace LiveMigration.Guest.State;

/// <summary>A component whose state saves and restores as one versioned section.</summary>
public interface IPersistent
{
    void Save(StateWriter writer);
    void Restore(StateReader reader);
}
