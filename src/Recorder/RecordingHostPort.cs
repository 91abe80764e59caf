using LiveMigration.Guest;
using LiveMigration.Recorder.Serial;

namespace LiveMigration.Recorder;

/// <summary>The live port, logging every input it delivers (and every time/entropy read) into a trace.</summary>
public sealed class RecordingHostPort(ISerialBackend serial, TraceRecorder recorder, ulong timeBase = 0) : LiveHostPort(serial, timeBase)
{
    public TraceRecorder Recorder => recorder;

    public override void Poll(Machine machine)
    {
        recorder.OnPoll(machine);
        base.Poll(machine);
    }

    protected override void DeliverTime(Machine machine, ulong now)
    {
        recorder.TimeDelivered(machine, now);
        base.DeliverTime(machine, now);
    }

    protected override void DeliverSerialInput(Machine machine, ReadOnlySpan<byte> data)
    {
        recorder.SerialInput(machine, data);
        base.DeliverSerialInput(machine, data);
    }

    public override ulong ReadTime(Machine machine)
    {
        ulong t = base.ReadTime(machine);
        recorder.TimeRead(machine, t);
        return t;
    }

    protected override void CompleteBlockRequests(Machine machine, int count)
    {
        recorder.BlockCompletion(machine, count);
        base.CompleteBlockRequests(machine, count);
    }

    public override ushort ReadEntropy(Machine machine)
    {
        ushort v = base.ReadEntropy(machine);
        recorder.Entropy(machine, v);
        return v;
    }
}
