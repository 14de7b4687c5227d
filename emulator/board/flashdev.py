# The emulated board's SPI flash (runs on the MicroPython unix port): the extended block-device protocol for
# os.VfsLfs2 over a file on the host, read and written in place, so the flash costs the board no heap (an ESP32
# keeps its flash outside RAM too) and survives restarts. The 'power_cut_at_write' fault (N) cuts the power at
# the Nth write or erase after it is set: half of that operation lands, then the board dies on the spot.
# (emulator/board/blockdev.py is the store's in-RAM test device; this one is the board's, file-backed.)
# NOR like the chip: programming only clears bits (old & new lands), only an erase sets a whole sector again.
import boardstate as _bs

_ERASED = b"\xff" * 256


class FlashDev:
    def __init__(self, path, block_size=4096, block_count=512):
        self.block_size = block_size
        self.block_count = block_count
        self.size = block_size * block_count
        self.writes = 0
        self.cut_at = None
        self._fault = None
        self._old = bytearray(256)  # scratch for the AND of programming, preallocated: no heap per write
        fresh = False
        try:
            f = open(path, "r+b")
            f.seek(0, 2)
            if f.tell() != self.size:
                f.close()
                raise ValueError("flash image %s is not %d bytes" % (path, self.size))
        except OSError:
            f = open(path, "w+b")
            for _ in range(self.size // 256):
                f.write(_ERASED)
            fresh = True
        self.fresh = fresh
        self._f = f
        _bs.on_faults(self._faults)

    def _faults(self, faults):
        n = faults.get("power_cut_at_write")
        if n != self._fault:
            self._fault = n
            self.cut_at = None if not n else self.writes + int(n)

    def _count(self):
        self.writes += 1
        return self.cut_at is not None and self.writes >= self.cut_at

    def _put(self, start, data):
        # FileIO is unbuffered: the bytes are in the host's page cache at once, safe from a killed VM. No flush:
        # on the unix port it is an fsync per write, which would make the emulated flash 5x slower.
        self._f.seek(start)
        self._f.write(data)

    def readblocks(self, block, buf, off=0):
        self._f.seek(block * self.block_size + off)
        self._f.readinto(buf)

    def writeblocks(self, block, buf, off=None):
        _bs.poll()
        if off is None:  # simple protocol: whole blocks, erase implied
            for b in range(block, block + len(buf) // self.block_size):
                self._erase(b)
            off = 0
        start = block * self.block_size + off
        if self._count():
            self._program(start, buf, len(buf) // 2)
            _bs.die(_bs.EXIT_POWERCUT, "powercut write %d" % self.writes)
        self._program(start, buf, len(buf))

    def _program(self, start, buf, n):
        old, f, i = self._old, self._f, 0
        while i < n:
            k = n - i if n - i < 256 else 256
            mv = memoryview(old)[:k]
            f.seek(start + i)
            f.readinto(mv)
            for j in range(k):
                old[j] &= buf[i + j]
            f.seek(start + i)
            f.write(mv)
            i += k

    def _erase(self, block):
        start = block * self.block_size
        if self._count():
            self._put(start, _ERASED * (self.block_size // 512))
            _bs.die(_bs.EXIT_POWERCUT, "powercut erase %d" % self.writes)
        self._f.seek(start)
        for _ in range(self.block_size // 256):
            self._f.write(_ERASED)

    def ioctl(self, op, arg):
        if op == 4:  # MP_BLOCKDEV_IOCTL_BLOCK_COUNT
            return self.block_count
        if op == 5:  # MP_BLOCKDEV_IOCTL_BLOCK_SIZE
            return self.block_size
        if op == 6:  # MP_BLOCKDEV_IOCTL_BLOCK_ERASE
            _bs.poll()
            self._erase(arg)
            return 0
        return 0  # 1 INIT, 2 DEINIT, 3 SYNC (nothing is buffered)
