# The board's loop (sample, log, upload) for many cycles in a small heap, run by tests/firmware/test_memory.py
# from the board's /lib as `airwatt flash` compiles it, as a board runs it:
#   micropython -X heapsize=HEAP -m board_memory FLASH_FILE PORT CYCLES WARMUP
# Real sampler, real compact log (clog.Log) on LittleFS (os.VfsLfs2) over a file-backed block device, real uplink
# in protocol v2 (HTTP over loopback to the test's server); only the sensors are fakes. In each stretch of
# (CYCLES - WARMUP) / 10 cycles the agent is unreachable for 4/9 of it, then the backlog drains in full batches
# while the sampler goes on. Prints "ALLOC <cycle> <allocated> <free>" after gc.collect() at the end of warm-up
# and at checkpoints (each at the same point of a stretch), "PEAK ..." and "DONE".
# Kept small: its own code shares the 64 KB heap with the board's.
import gc

gc.threshold(4096)  # as boot.py sets it on the board: collect often, so long-lived objects stay packed low
import os
import sys

# Imported one by one with a collection between: loading a module leaves garbage, and the next module's
# long-lived objects would otherwise land between it and fragment the small heap.
import asyncio
gc.collect()
from protocol import canonical  # noqa: E402
gc.collect()
from protocol import answer  # noqa: E402,F401
gc.collect()
import clock  # noqa: E402
gc.collect()
from protocol import packed  # noqa: E402,F401
gc.collect()
import sampler  # noqa: E402
gc.collect()
import clog  # noqa: E402
gc.collect()
import uplink  # noqa: E402
# As board.py does once the loops' modules are loaded: the field table goes (they keep the names they use).
del sys.modules["protocol.fields"]
del sys.modules["protocol"].fields
gc.collect()

ERASED = b"\xff" * 256


class Flash:
    """os.VfsLfs2 block device (extended protocol) on a file of 64 sectors of 4 KB, as LittleFS uses the ESP32's
    flash: the flash image stays out of the 64 KB heap."""

    def __init__(self, path):
        self.f = open(path, "wb+")
        for b in range(64):
            self.ioctl(6, b)

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * 4096 + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=0):
        self.f.seek(block * 4096 + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 6:  # erase: NOR flash erases to 0xff
            self.f.seek(arg * 4096)
            for _ in range(16):
                self.f.write(ERASED)
        return 64 if op == 4 else 4096 if op == 5 else 0  # block count, block size


class Sensor:
    """A fake sensor at the driver contract whose values move a little every read, as real ones do."""

    def __init__(self, kind):
        self.kind = kind
        self.n = 0

    async def start(self):
        pass

    async def read(self):
        self.n += 1
        k = self.n % 50
        if self.kind == "energy":
            return {"voltage": 229.0 + k / 10, "current": 1.0 + k / 1000, "power": 230.0 + k,
                    "energy_wh": 1000 + self.n // 10, "frequency": 50.0, "pf": 0.9}, []
        if self.kind == "pm":
            return {"pm1": k, "pm25": k + 2, "pm10": k + 5}, []
        return {"co2": 500 + k, "temperature": 23.0 + k / 100, "humidity": 45.0 + k / 10}, []


async def main(port, cycles, warmup):
    os.VfsLfs2.mkfs(bdev)
    os.mount(os.VfsLfs2(bdev), "/flash")  # as the board mounts its flash (and the emulator, the bench)
    st = clog.Log(root="/flash/data", capacity=20000)
    now = [0]  # ticks_ms: one cycle is one second of the board's life, however fast the VM runs it
    clk = clock.Clock(lambda: now[0])
    smp = sampler.Sampler([sampler.Sensor(k, Sensor(k), 1000, 1000) for k in ("energy", "pm", "co2")], st, clk,
                          "0a1b2c3d")
    up = uplink.Uplink({"host": "127.0.0.1", "port": port, "prefix": "", "device": "kk-test-01",
                        "key": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                        "batch_max": 50, "upload_s": 30, "http_timeout_s": 10}, st, clk, "0a1b2c3d", "0.2.0")
    every = (cycles - warmup) // 10
    peak = body = full = 0  # highest allocated heap with a batch planned (after a collection), largest body
    for i in range(1, cycles + 1):
        now[0] += 1000
        gc.collect()  # as board.watchdog does every second on the board
        await smp.step()
        if every // 3 <= i % every < every // 3 + every * 4 // 9:
            continue  # the agent is unreachable
        status = canonical.encode_status(clk.ms() // 1000, gc.mem_free(), -60, st.depth, st.dropped, smp.errors,
                                         clk.sync)
        got = up._batch(status)  # what upload_once() sends: planned here once to measure it, then sent
        gc.collect()
        a = gc.mem_alloc()
        peak = a if a > peak else peak
        body = got[1] if got[1] > body else body
        got = None
        a = (await up.upload_once(status))[2]
        if up.failures or a is None:
            raise AssertionError("cycle %d: %s" % (i, up.last))
        clk.from_agent(a["server_time"])
        full += int(up.last[3:]) > 300
        if up.sent != 3 * i and i % every < every // 3:
            raise AssertionError("cycle %d: %d sent, the backlog did not drain" % (i, up.sent))
        if i >= warmup and (i - warmup) % every == 0:
            gc.collect()
            print("ALLOC %d %d %d" % (i, gc.mem_alloc(), gc.mem_free()))
    print("PEAK %d body %d full batches %d" % (peak, body, full))
    print("DONE %d next_seq %d depth %d dropped %d errors %s" % (cycles, st.next_seq, st.depth, st.dropped,
                                                                 smp.errors))


bdev = Flash(sys.argv[1])
asyncio.run(main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
