using LiveMigration.Guest.Memory;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Xbzrle;
using static LiveMigration.Migration.Protocol.Envelope;

namespace LiveMigration.Migration.Hosting;

/// <summary>
/// Checks every message of an incoming migration stream before the destination acts on it: the
/// setup's names and sizes, page numbers within the announced memory, list lengths that agree, a
/// log chunk that is exactly one trace frame. A message that fails is a <see cref="ProtocolException"/>,
/// which discards the incoming migration; nothing of it has been applied.
/// </summary>
internal sealed class IncomingStreamRules(GuestHost host, Connection conn)
{
    private const int TraceFrameHeader = 36; // src/Trace/FORMAT.md, "Frames"
    private uint _pageCount;
    private ulong _diskBlocks;
    private bool _started;

    public void Check(Envelope e)
    {
        bool first = !_started;
        try { CheckMessage(e); }
        catch (ProtocolException ex)
        {
            // Tell the source why before the stream closes (it would otherwise see only a closed connection).
            var refusal = first && e.BodyCase == BodyOneofCase.Setup
                ? new Envelope { SetupReply = new SetupReply { Accepted = false, Error = ex.Message } }
                : new Envelope { Abort = new Abort { Reason = $"the destination refused a {e.BodyCase}: {ex.Message}" } };
            try { conn.Send(refusal); } catch (IOException) { }
            throw;
        }
    }

    private void CheckMessage(Envelope e)
    {
        if (!_started)
        {
            _started = true;
            if (e.BodyCase == BodyOneofCase.Setup) { CheckSetup(e.Setup); return; }
            if (e.BodyCase == BodyOneofCase.PostcopyResume) { CheckResume(e.PostcopyResume); return; }
            throw new ProtocolException($"a migration stream must begin with MigrateSetup or PostcopyResume, not {e.BodyCase}");
        }
        switch (e.BodyCase)
        {
            case BodyOneofCase.Setup or BodyOneofCase.PostcopyResume:
                throw new ProtocolException($"a second {e.BodyCase} on one migration stream");
            case BodyOneofCase.Pages: CheckBatch(e.Pages); break;
            case BodyOneofCase.PostcopyPages: CheckBatch(e.PostcopyPages); break;
            case BodyOneofCase.ZeroPages: CheckRuns(e.ZeroPages.First, e.ZeroPages.Count, "zero-page"); break;
            case BodyOneofCase.DeltaPages: CheckDelta(e.DeltaPages); break;
            case BodyOneofCase.PostcopyManifest:
                foreach (uint p in e.PostcopyManifest.Pages) CheckPage(p);
                CheckRuns(e.PostcopyManifest.RunFirst, e.PostcopyManifest.RunCount, "manifest");
                break;
            case BodyOneofCase.Log: CheckLog(e.Log); break;
            case BodyOneofCase.DiskBlocks: CheckDisk(e.DiskBlocks); break;
            case BodyOneofCase.DiskDone:
                var d = e.DiskDone;
                if (d.AbsentFirst.Count != d.AbsentCount.Count) throw new ProtocolException("disk runs with mismatched lists");
                for (int i = 0; i < d.AbsentFirst.Count; i++)
                    if (d.AbsentCount[i] == 0 || d.AbsentFirst[i] > _diskBlocks || d.AbsentCount[i] > _diskBlocks - d.AbsentFirst[i])
                        throw new ProtocolException($"disk run {d.AbsentFirst[i]}+{d.AbsentCount[i]} is beyond the end of the disk ({_diskBlocks} blocks)");
                break;
        }
    }

    private void CheckSetup(MigrateSetup s)
    {
        if (Names.Problem(s.Name) is { } bad) throw new ProtocolException($"refused migration: {bad}");
        if (Names.Problem(s.MigrationId, "migration id") is { } badId) throw new ProtocolException($"refused migration: {badId}");
        if (s.ImageName.Length > 256 || s.ImageName.Any(char.IsControl)) throw new ProtocolException("refused migration: an image name must be printable and at most 256 characters");
        try { Address.Parse(s.Source); }
        catch (FormatException ex) { throw new ProtocolException($"refused migration: source {ex.Message}"); }
        if (s.MemorySize == 0 || s.MemorySize % GuestMemory.PageSize != 0 || s.MemorySize > host.Options.MaxMemorySize)
            throw new ProtocolException($"machine config not supported: memory size {s.MemorySize} is not supported here (4 KiB multiples up to {host.Options.MaxMemorySize >> 20} MiB)");
        if (s.PageCount != s.MemorySize / GuestMemory.PageSize) throw new ProtocolException($"refused migration: {s.PageCount} pages for {s.MemorySize} bytes");
        _pageCount = s.PageCount;
        _diskBlocks = (s.Machine?.Disk?.Length ?? 0) / Guest.Devices.Virtio.Block.Disk.BlockSize;
        if (s.Disk is { } plan && (plan.Path.Length > 4096 || plan.Base.Length > 4096 || plan.Path.Any(char.IsControl) || plan.Base.Any(char.IsControl)))
            throw new ProtocolException("refused migration: a disk path must be printable and at most 4096 characters");
    }

    /// <summary>Block numbers within the disk the setup announced, lists that agree, batches of the sender's size.</summary>
    private void CheckDisk(DiskBlocks d)
    {
        if (d.Blocks.Count > DiskTransfer.BatchBlocks || d.ZeroBlocks.Count > DiskTransfer.MaxZeroMarkers) throw new ProtocolException($"disk batch of {d.Blocks.Count} blocks and {d.ZeroBlocks.Count} zero markers");
        if (d.Blocks.Count != d.Hashes.Count) throw new ProtocolException($"disk batch of {d.Blocks.Count} blocks with {d.Hashes.Count} hashes");
        if (d.Blocks.Count > 0 && d.Zstd.IsEmpty) throw new ProtocolException("disk batch without data");
        foreach (ulong b in d.Blocks) if (b >= _diskBlocks) throw new ProtocolException($"disk block {b} is beyond the end of the disk ({_diskBlocks} blocks)");
        foreach (ulong b in d.ZeroBlocks) if (b >= _diskBlocks) throw new ProtocolException($"disk block {b} is beyond the end of the disk ({_diskBlocks} blocks)");
    }

    private void CheckResume(PostcopyResume r)
    {
        if (Names.Problem(r.Name) is { } bad) throw new ProtocolException($"refused post-copy resume: {bad}");
        if (host.OwnerOf(r.MigrationId) is { } owner && owner.Authenticated && owner.Name != conn.Peer.Name)
            throw new ProtocolException($"refused post-copy resume of '{r.Name}': {conn.Peer} is not {owner}, the source that owns it");
        _pageCount = host.PageCountOf(r.Name);
        _diskBlocks = host.DiskBlocksOf(r.Name);
    }

    private void CheckPage(uint page)
    {
        if (page >= _pageCount) throw new ProtocolException($"page {page} is beyond the end of memory ({_pageCount} pages)");
    }

    private void CheckBatch(PageBatch b)
    {
        if (b.Pages.Count is 0 or > PageSender.BatchPages) throw new ProtocolException($"page batch of {b.Pages.Count} pages");
        if (b.Hashes.Count != 0 && b.Hashes.Count != b.Pages.Count) throw new ProtocolException($"page batch of {b.Pages.Count} pages with {b.Hashes.Count} hashes");
        if (b.Zstd.IsEmpty) throw new ProtocolException("page batch without data");
        foreach (uint p in b.Pages) CheckPage(p);
    }

    private void CheckRuns(IList<uint> first, IList<uint> count, string what)
    {
        if (first.Count != count.Count) throw new ProtocolException($"{what} runs with mismatched lists");
        for (int i = 0; i < first.Count; i++)
            if (count[i] == 0 || (ulong)first[i] + count[i] > _pageCount)
                throw new ProtocolException($"{what} run {first[i]}+{count[i]} is beyond the end of memory ({_pageCount} pages)");
    }

    private void CheckDelta(DeltaPages d)
    {
        int n = d.Pages.Count;
        if (n == 0 || n != d.Kinds.Length || n != d.Lengths.Count) throw new ProtocolException("delta page batch with mismatched lists");
        ulong sum = 0;
        for (int i = 0; i < n; i++)
        {
            CheckPage(d.Pages[i]);
            var kind = (PageEncoding)d.Kinds[i];
            uint length = d.Lengths[i];
            bool ok = kind switch
            {
                PageEncoding.Full => length == GuestMemory.PageSize,
                PageEncoding.Delta or PageEncoding.DeltaBase => length is > 0 and <= GuestMemory.PageSize * 2,
                _ => false,
            };
            if (!ok) throw new ProtocolException($"page {d.Pages[i]}: encoding {d.Kinds[i]} with {length} bytes");
            sum += length;
        }
        if (sum != d.RawLength) throw new ProtocolException($"delta page batch: lengths add up to {sum}, raw_length says {d.RawLength}");
    }

    private static void CheckLog(LogChunk chunk)
    {
        var f = chunk.Frame.Span;
        if (f.Length < TraceFrameHeader) throw new ProtocolException($"log chunk of {f.Length} bytes is shorter than a trace frame header");
        uint stored = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(f[4..]);
        uint raw = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(f[8..]);
        if (stored != f.Length - TraceFrameHeader) throw new ProtocolException($"log chunk of {f.Length} bytes holds a trace frame announcing {stored} stored bytes");
        if (raw > FrameLimits.LogChunk) throw new ProtocolException($"log chunk announces {raw} raw bytes (at most {FrameLimits.LogChunk})");
    }
}
