# An emulated NOR flash chip for os.VfsLfs2: the MicroPython extended block-device protocol over a bytearray,
# optionally written through to a file so the flash survives restarts, with a power-cut fault.
# Runs on MicroPython and CPython.
#
# NOR, as on the ESP32's SPI flash: programming only clears bits (the flash keeps old & new), and only an erase
# sets them again, a whole sector at a time. A store that rewrites bytes in place without an erase reads back
# the AND of both, here as on the chip. `erases` counts erases per sector, for wear figures.
#
#   bdev = BlockDev("flash.bin", block_size=4096, block_count=256)
#   os.VfsLfs2.mkfs(bdev); os.mount(os.VfsLfs2(bdev), "/data")
#   bdev.cut_after_writes = 7   # the 7th write/erase since power-on is cut: cut_keep bytes of it land,
#   ...                         # PowerCut is raised and the device is dead: every later access raises it
#   bdev = bdev.power_on()      # power back: a NEW device over the flash as the cut left it; mount, recover
#
# A dead device never touches the flash again. Files left open at the cut are closed later by the garbage
# collector (heap locked: nothing can be raised without a printed traceback); such calls are served from a
# private copy taken at the cut, so they succeed quietly and change nothing that power_on() hands over.


class PowerCut(BaseException):
    # BaseException: a power cut must not be swallowed by the firmware's `except Exception` handlers.
    pass


_ERASED = b"\xff" * 256


class BlockDev:
    def __init__(self, path=None, block_size=4096, block_count=64, data=None):
        self.block_size = block_size
        self.block_count = block_count
        self.path = path
        self._file = None
        self.writes = 0  # write and erase calls since this device was created (powered on)
        self.erases = None  # per-sector erase counts (a bytearray of u32, see erase_count), on demand: track_wear()
        self.programmed = 0  # bytes programmed since power-on
        self.cut_after_writes = None  # cut the write/erase call that makes `writes` reach this number
        self.cut_keep = 0  # bytes of the cut write (or of the erased block) that still land
        self.dead = False
        self.cut_kind = None  # "write" or "erase": what the cut hit
        self._flash = None  # after a cut: the flash as the cut left it
        if data is not None:
            self.data = data
        else:
            self.data = bytearray(block_size * block_count)
            n = -1
            if path is not None:
                try:
                    with open(path, "rb") as f:
                        n = f.readinto(self.data)
                except OSError:
                    pass  # a new flash file
            if n != len(self.data):
                if n >= 0:
                    raise ValueError("flash file %s holds %d bytes, expected %d" % (path, n, len(self.data)))
                self._fill(0, len(self.data))  # erased flash
        if path is not None:
            if data is not None or n < 0:
                with open(path, "wb") as f:
                    f.write(self.data)
            self._file = open(path, "r+b")

    def power_on(self):
        """A new device over the flash as the cut left it (cuts now if this one is still alive)."""
        if not self.dead:
            self._die()
        on = BlockDev(self.path, self.block_size, self.block_count, self._flash)
        on.erases = self.erases  # wear is the chip's, not the power cycle's
        return on

    def track_wear(self):
        """Count erases per sector from now on (erase_count(block), max_erases())."""
        if self.erases is None:
            self.erases = [0] * self.block_count

    def erase_count(self, block):
        return self.erases[block]

    def max_erases(self):
        return max(self.erases)

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def _die(self):
        self.close()
        self.dead = True
        self._flash = self.data
        self.data = bytearray(self.data)  # the zombie's private copy

    def _dead(self):
        try:
            [self]  # allocates: fails only with the heap locked, i.e. in a GC finaliser
        except MemoryError:
            return  # served quietly from the private copy
        raise PowerCut("flash has no power")

    def _fill(self, start, n):
        # Erased flash reads 0xFF.
        end = start + n
        while start < end:
            k = min(256, end - start)
            self._copy(self.data, start, _ERASED, 0, k)
            start += k

    def _copy(self, dst, d, src, s, n):
        try:
            dst[d : d + n] = memoryview(src)[s : s + n]
        except MemoryError:  # called by the GC (a file finaliser) with the heap locked: copy without allocating
            for i in range(n):
                dst[d + i] = src[s + i]

    def _check(self, block, off, n):
        if self.dead:
            self._dead()
        if block < 0 or off < 0 or block * self.block_size + off + n > len(self.data):
            raise OSError(22)  # EINVAL: outside the chip

    def _persist(self, start, n):
        if self._file is not None:
            self._file.seek(start)
            self._file.write(memoryview(self.data)[start : start + n])
            self._file.flush()

    def _is_cut(self):
        # Counts this write/erase; True when it is the one the power cut hits.
        if self.dead:
            return False
        self.writes += 1
        return self.cut_after_writes is not None and self.writes >= self.cut_after_writes

    def _cut(self, kind):
        self.cut_kind = kind
        self._die()
        raise PowerCut("power cut at flash write %d" % self.writes)

    def readblocks(self, block, buf, off=0):
        n = len(buf)
        self._check(block, off, n)
        self._copy(buf, 0, self.data, block * self.block_size + off, n)

    def writeblocks(self, block, buf, off=None):
        n = len(buf)
        if off is None:  # simple protocol: whole blocks, erase implied
            self._check(block, 0, n)
            for b in range(block, block + n // self.block_size):
                self._erase(b)
            off = 0
        self._check(block, off, n)
        start = block * self.block_size + off
        if self._is_cut():
            keep = min(max(self.cut_keep, 0), n)
            self._program(start, buf, keep)
            self._persist(start, keep)
            self._cut("write")
        self._program(start, buf, n)
        self._persist(start, n)

    def _program(self, start, buf, n):
        # NOR programming clears bits only: what lands is old & new.
        d = self.data
        self.programmed += n
        for i in range(n):  # allocates nothing: also safe in a GC finaliser with the heap locked
            d[start + i] &= buf[i]

    def _erase(self, block):
        self._check(block, 0, self.block_size)
        start = block * self.block_size
        if self._is_cut():
            keep = min(max(self.cut_keep, 0), self.block_size)
            self._fill(start, keep)
            self._persist(start, keep)
            self._cut("erase")
        self._fill(start, self.block_size)
        self._persist(start, self.block_size)
        if self.erases is not None:
            self.erases[block] += 1

    def ioctl(self, op, arg):
        if op == 4:  # MP_BLOCKDEV_IOCTL_BLOCK_COUNT
            return self.block_count
        if op == 5:  # MP_BLOCKDEV_IOCTL_BLOCK_SIZE
            return self.block_size
        if op == 6:  # MP_BLOCKDEV_IOCTL_BLOCK_ERASE
            self._erase(arg)
            return 0
        if op == 3 and self._file is not None:  # MP_BLOCKDEV_IOCTL_SYNC
            self._file.flush()
        return 0  # 1 INIT, 2 DEINIT, 3 SYNC
