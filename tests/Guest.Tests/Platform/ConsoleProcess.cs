using System.Diagnostics;
using System.Text;

namespace LiveMigration.Guest.Tests.Platform;

/// <summary>A process whose stdout is a guest console: wait for text, send lines, collect everything it printed.</summary>
public sealed class ConsoleProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly Thread _reader;
    private int _consumed;

    public ConsoleProcess(string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (string a in args) psi.ArgumentList.Add(a);
        _process = Process.Start(psi)!;
        _process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (_output) Stderr.AppendLine(e.Data); };
        _process.BeginErrorReadLine();
        _reader = new Thread(ReadLoop) { IsBackground = true };
        _reader.Start();
    }

    public StringBuilder Stderr { get; } = new();

    public string Output { get { lock (_output) return _output.ToString(); } }

    private void ReadLoop()
    {
        var buf = new byte[4096];
        var stream = _process.StandardOutput.BaseStream;
        int n;
        while ((n = stream.Read(buf)) > 0)
            lock (_output)
            {
                _output.Append(Encoding.Latin1.GetString(buf, 0, n));
                Monitor.PulseAll(_output);
            }
    }

    /// <summary>Waits until <paramref name="text"/> appears after what earlier waits consumed; returns the output up to and including it.</summary>
    public string WaitFor(string text, TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        lock (_output)
        {
            while (true)
            {
                int at = _output.ToString().IndexOf(text, _consumed, StringComparison.Ordinal);
                if (at >= 0)
                {
                    string got = _output.ToString(_consumed, at + text.Length - _consumed);
                    _consumed = at + text.Length;
                    return got;
                }
                var left = until - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || (_process.HasExited && !_reader.IsAlive))
                    throw new TimeoutException($"'{text}' did not appear within {timeout.TotalSeconds:F0} s; console so far:\n{_output}\nstderr:\n{Stderr}");
                Monitor.Wait(_output, left < TimeSpan.FromSeconds(1) ? left : TimeSpan.FromSeconds(1));
            }
        }
    }

    public void Send(string line)
    {
        _process.StandardInput.Write(line + "\n");
        _process.StandardInput.Flush();
    }

    /// <summary>Sends a line and returns the console's reply up to the next newline.</summary>
    public string Ask(string line, TimeSpan timeout)
    {
        Send(line);
        return WaitFor("\n", timeout).TrimEnd('\n', '\r');
    }

    public int WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout)) throw new TimeoutException($"process did not exit within {timeout.TotalSeconds:F0} s; console:\n{Output}");
        _reader.Join();
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.Dispose();
    }
}
