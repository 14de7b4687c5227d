# The steady loop (sample, store, upload) for many cycles in a small heap, run by tests/firmware/test_memory.py
# from mpy-cross output, as a board runs it:
#   micropython -X heapsize=65536 -m board_memory FLASH_FILE PORT CYCLES WARMUP
# Real sampler, real store on LittleFS (os.VfsLfs2) over a file-backed block device, real uplink (HTTP over
# loopback to the test's server); only the sensors are fakes. Prints "ALLOC <cycle> <allocated> <free>" after
# gc.collect() at the end of warm-up and at checkpoints, then "DONE".
import gc

gc.threshold(4096)  # as boot.py sets it on the board: collect often, so long-lived objects stay packed low
import os
import sys
from micropython import const

# Imported one by one with a collection between: loading a module leaves garbage, and the next module's
# long-lived objects would otherwise land between it and fragment the small heap.
import asyncio
gc.collect()
from protocol import fields  # noqa: E402,F401
gc.collect()
from protocol import wire  # noqa: E402,F401
gc.collect()
from protocol import answer  # noqa: E402,F401
gc.collect()
import sampler  # noqa: E402
gc.collect()
import store  # noqa: E402
gc.collect()
import uplink  # noqa: E402
gc.collect()
gc.collect()

_BLOCK = const(4096)  # the ESP32's flash sector, as LittleFS uses it there
_BLOCKS = const(64)


class FileBlockDev:
    """os.VfsLfs2 block device (extended protocol) on a file: the flash image stays out of the 64 KB heap."""

    def __init__(self, path):
        try:
            self.f = open(path, "r+b")
        except OSError:
            self.f = open(path, "wb+")
            erased = b"\xff" * 256
            for _ in range(_BLOCKS * _BLOCK // 256):
                self.f.write(erased)
            self.f.flush()

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * _BLOCK + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=None):
        self.f.seek(block * _BLOCK + (off or 0))
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return _BLOCKS
        if op == 5:  # block size
            return _BLOCK
        if op == 6:  # erase: NOR flash erases to 0xff
            self.f.seek(arg * _BLOCK)
            for _ in range(_BLOCK // 256):
                self.f.write(b"\xff" * 256)
            return 0
        return 0


class Ticks:
    """ticks_ms for the loop: one cycle is one second of the board's life, however fast the VM runs it."""

    def __init__(self):
        self.now = 0

    def __call__(self):
        return self.now


class Sensor:
    """A fake sensor at the driver contract whose values move a little every read, as real ones do."""

    def __init__(self, kind):
        self.KIND = kind
        self.n = 0

    async def start(self):
        pass

    async def read(self):
        self.n += 1
        k = self.n % 50
        if self.KIND == "energy":
            return {"voltage": 229.0 + k / 10, "current": 1.0 + k / 1000, "power": 230.0 + k,
                    "energy_wh": 1000 + self.n // 10, "frequency": 50.0, "pf": 0.9}, []
        if self.KIND == "pm":
            return {"pm1": k, "pm25": k + 2, "pm10": k + 5}, []
        return {"co2": 500 + k, "temperature": 23.0 + k / 100, "humidity": 45.0 + k / 10}, []


async def main():
    flash, port, cycles, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    bdev = FileBlockDev(flash)
    os.VfsLfs2.mkfs(bdev)
    os.mount(os.VfsLfs2(bdev, readsize=128, progsize=128), "/flash")  # fewer, larger flash reads
    st = store.Store(root="/flash/data", capacity=2000)
    ticks = Ticks()
    clock = sampler.Clock(ticks)
    sensors = [sampler.Sensor(k, Sensor(k), 1000, 1000) for k in ("energy", "pm", "co2")]
    smp = sampler.Sampler(sensors, st, clock, "0a1b2c3d")
    cfg = {"host": "127.0.0.1", "port": port, "prefix": "", "device": "kk-test-01",
           "key": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "batch_max": 50,
           "upload_s": 30, "http_timeout_s": 10}

    def status():
        return uplink.wire.encode_status(clock.ms() // 1000, gc.mem_free(), -60, st.depth, st.dropped,
                                         smp.errors, clock.sync)

    up = uplink.Uplink(cfg, st, clock, "0a1b2c3d", status=status, sampler_=smp, log=print)
    every = (cycles - warmup) // 10
    gc.collect()
    print("START free %d" % gc.mem_free())
    for i in range(1, cycles + 1):
        ticks.now += 1000
        gc.collect()  # as board.watchdog does every second on the board
        await smp.step()
        await up.upload_once()
        if up.failures or up.sent != 3 * i:
            raise AssertionError("cycle %d: %s" % (i, up.last))
        if i >= warmup and (i - warmup) % every == 0:
            gc.collect()
            print("ALLOC %d %d %d" % (i, gc.mem_alloc(), gc.mem_free()))
    print("DONE %d next_seq %d depth %d dropped %d errors %s" % (cycles, st.next_seq, st.depth, st.dropped,
                                                                 smp.errors))


asyncio.run(main())
