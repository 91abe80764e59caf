using LiveMigration.Guest.Memory;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Balloon;

/// <summary>
/// Free-page reporting ("balloon"), a small paravirtual device in the spirit of Hines' dynamic
/// self-ballooning: the guest tells the host which DRAM pages it does not use, and every migration
/// strategy skips them.
/// <para>
/// It sits at 0x0010_2000, a hole in QEMU virt's map (0x0010_0000 is the sifive_test finisher,
/// 0x0010_1000 QEMU's goldfish RTC, then nothing up to the CLINT). On QEMU a load there is an
/// access fault, so guests probe <see cref="RegMagic"/> with a trap-safe load and use the device
/// only when the magic reads back (guests/common/runtime.c).
/// </para>
/// Registers (32-bit unless noted; unknown offsets read 0 and ignore writes):
/// <code>
/// 0x00 MAGIC      RO  0x4E4C4142 ("BALN")
/// 0x04 VERSION    RO  1
/// 0x08 PAGE_SIZE  RO  4096
/// 0x0C DRAM_PAGES RO  pages of DRAM
/// 0x10 ADDRESS    RW  64-bit (or two 32-bit halves): guest physical address of the first page
/// 0x18 COUNT      RW  number of pages
/// 0x1C COMMAND    WO  1 = report ADDRESS..+COUNT pages free, 2 = withdraw them (take them back)
/// 0x20 STATUS     RO  result of the last command: 0 ok, 1 bad range (unaligned, empty, outside DRAM), 2 bad command
/// 0x24 FREE_PAGES RO  pages currently reported free
/// </code>
/// Contract: reporting a page hands it to the host. Its contents are discarded (the device zeroes it,
/// so a strategy can skip it and the destination's fresh zero page is the same state); the guest
/// must not touch it until it withdraws it, after which it reads as zero. A guest that breaks the
/// contract is caught by the migration's digest check, never silently.
/// </summary>
public sealed class BalloonDevice : IMmioDevice
{
    public const ulong DefaultBase = 0x0010_2000;
    public const uint Magic = 0x4E4C_4142; // "BALN" in little-endian bytes
    public const uint DeviceVersion = 1;

    public const int RegMagic = 0x00, RegVersion = 0x04, RegPageSize = 0x08, RegDramPages = 0x0C;
    public const int RegAddress = 0x10, RegAddressHigh = 0x14, RegCount = 0x18, RegCommand = 0x1C;
    public const int RegStatus = 0x20, RegFreePages = 0x24;

    public const uint CommandReport = 1, CommandWithdraw = 2;
    public const uint StatusOk = 0, StatusBadRange = 1, StatusBadCommand = 2;

    // Bump when a saved field is added or its meaning changes; readers accept 1..current.
    private const ushort StateVersion = 1;

    private readonly GuestMemory _memory;
    private readonly FreePageBitmap _free;
    private ulong _address;
    private uint _count;
    private uint _status;

    public BalloonDevice(Machine machine)
    {
        _memory = machine.Memory;
        _free = new FreePageBitmap(_memory.PageCount);
    }

    public ulong Base => DefaultBase;
    public ulong Length => 0x1000;

    /// <summary>
    /// True while the page (index from the start of DRAM) is free: reported to this device, or
    /// reported through virtio-balloon free page reporting and not written since
    /// (<see cref="GuestMemory.IsReportedFree"/>).
    /// </summary>
    public bool IsFreePage(int page) => _free[page] || _memory.IsReportedFree(page);

    /// <summary>Pages currently free (both kinds).</summary>
    public int FreePageCount => _memory.ReportedFreeCount == 0 ? _free.Count : FreeRanges().Sum(r => r.Count);

    /// <summary>Free pages in ascending order.</summary>
    public IEnumerable<int> FreePages()
    {
        foreach (var (first, count) in FreeRanges())
            for (int p = first; p < first + count; p++) yield return p;
    }

    /// <summary>Maximal runs of free pages (first page, count), ascending.</summary>
    public IEnumerable<(int First, int Count)> FreeRanges()
    {
        if (_memory.ReportedFreeCount == 0) return _free.Ranges();
        var runs = new List<(int First, int Count)>();
        int start = -1;
        for (int p = 0; p <= _memory.PageCount; p++)
        {
            bool free = p < _memory.PageCount && IsFreePage(p);
            if (free && start < 0) start = p;
            else if (!free && start >= 0) { runs.Add((start, p - start)); start = -1; }
        }
        return runs;
    }

    /// <summary>Commands the guest issued (for reports and tests).</summary>
    public long Reports { get; private set; }
    public long Withdrawals { get; private set; }

    public void Reset()
    {
        _free.Clear();
        _address = 0;
        _count = 0;
        _status = StatusOk;
    }

    public bool Read(ulong offset, int size, out ulong value)
    {
        value = offset switch
        {
            RegMagic => Magic,
            RegVersion => DeviceVersion,
            RegPageSize => GuestMemory.PageSize,
            RegDramPages => (uint)_memory.PageCount,
            RegAddress => size == 8 ? _address : (uint)_address,
            RegAddressHigh => _address >> 32,
            RegCount => _count,
            RegStatus => _status,
            RegFreePages => (uint)_free.Count,
            _ => 0,
        };
        return size is 4 or 8;
    }

    public bool Write(ulong offset, int size, ulong value)
    {
        if (size is not (4 or 8)) return false;
        switch (offset)
        {
            case RegAddress: _address = size == 8 ? value : (_address & 0xFFFF_FFFF_0000_0000) | (uint)value; break;
            case RegAddressHigh: _address = (_address & 0xFFFF_FFFF) | ((ulong)(uint)value << 32); break;
            case RegCount: _count = (uint)value; break;
            case RegCommand: _status = Execute((uint)value); break;
        }
        return true;
    }

    private uint Execute(uint command)
    {
        if (command is not (CommandReport or CommandWithdraw)) return StatusBadCommand;
        ulong offset = _address - _memory.Base;
        if (_address < _memory.Base || offset % GuestMemory.PageSize != 0 || _count == 0) return StatusBadRange;
        ulong firstPage = offset / GuestMemory.PageSize;
        if (firstPage >= (ulong)_memory.PageCount || _count > (ulong)_memory.PageCount - firstPage) return StatusBadRange;
        if (command == CommandReport) ReportFree((int)firstPage, (int)_count);
        else Withdraw((int)firstPage, (int)_count);
        return StatusOk;
    }

    /// <summary>Marks pages free and discards their contents (what the guest's REPORT command does).</summary>
    public void ReportFree(int firstPage, int count)
    {
        CheckRange(firstPage, count);
        for (int p = firstPage; p < firstPage + count; p++)
            if (!_free[p]) _memory.ZeroPage(p); // no-op (and no dirtying) for never-written pages
        _free.SetRange(firstPage, count, true);
        Reports++;
    }

    /// <summary>Gives pages back to the guest (what its WITHDRAW command does); they read as zero.</summary>
    public void Withdraw(int firstPage, int count)
    {
        CheckRange(firstPage, count);
        _free.SetRange(firstPage, count, false);
        Withdrawals++;
    }

    private void CheckRange(int firstPage, int count)
    {
        if (firstPage < 0 || count < 0 || firstPage > _memory.PageCount - count)
            throw new ArgumentOutOfRangeException(nameof(firstPage), $"pages {firstPage}..+{count} are outside DRAM ({_memory.PageCount} pages)");
    }

    public void Save(StateWriter w) => w.Section("BALN", StateVersion, WriteFields);

    public void WriteDigestState(StateWriter w) => w.Tagged("BALN", WriteFields);

    // Save section v1 and the digest encoding share these fields today; a new save version may not.
    private void WriteFields(StateWriter w)
    {
        w.U64(_address);
        w.U32(_count);
        w.U32(_status);
        w.U32((uint)_memory.PageCount);
        var ranges = _free.Ranges().ToList();
        w.U32((uint)ranges.Count);
        foreach (var (first, count) in ranges)
        {
            w.U32((uint)first);
            w.U32((uint)count);
        }
    }

    public void Restore(StateReader r) => PrepareRestore(r)();

    public Action PrepareRestore(StateReader r)
    {
        r.OpenSection("BALN", 1, StateVersion);
        ulong address = r.U64();
        uint count = r.U32(), status = r.U32(), pages = r.U32();
        if (pages != (uint)_memory.PageCount)
            throw new InvalidDataException($"balloon state covers {pages} pages; this machine has {_memory.PageCount}");
        uint rangeCount = r.U32();
        var ranges = new (int First, int Count)[Math.Min(rangeCount, (uint)_memory.PageCount)];
        if (rangeCount > ranges.Length) throw new InvalidDataException($"balloon state has {rangeCount} free ranges, more than there are pages");
        long previousEnd = -1;
        for (int i = 0; i < ranges.Length; i++)
        {
            uint first = r.U32(), n = r.U32();
            if (n == 0 || first >= pages || n > pages - first || first <= previousEnd)
                throw new InvalidDataException($"balloon state has a bad free range {first}..+{n}");
            ranges[i] = ((int)first, (int)n);
            previousEnd = first + n;
        }
        r.CloseSection();
        if (status > StatusBadCommand) throw new InvalidDataException($"balloon state has status {status}, which no command returns");
        return () =>
        {
            _address = address;
            _count = count;
            _status = status;
            _free.Clear();
            foreach (var (first, n) in ranges) _free.SetRange(first, n, true);
        };
    }
}
