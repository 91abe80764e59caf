using LiveMigration.Guest;

namespace LiveMigration.Recorder;

/// <summary>
/// Where every nondeterministic input a hosted guest sees is logged, for log shipping or a recording
/// (<see cref="TraceRecorder"/> is the implementation that writes a trace). Calls come from the guest's thread, at the icount the
/// input takes effect.
/// </summary>
public interface IInputLog
{
    void OnPoll(Machine machine);
    void TimeDelivered(Machine machine, ulong time);
    void TimeRead(Machine machine, ulong time);
    void SerialInput(Machine machine, ReadOnlySpan<byte> data);
    void Entropy(Machine machine, ushort value);
    void BlockCompletion(Machine machine, int count);
}
