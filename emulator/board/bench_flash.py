# The flash side of `airwatt bench board`, on the MicroPython VM: one store (v1: store.Store, as today's firmware
# uses it; v2: clog.Log) on the emulated NOR flash of a stock ESP32 module (2 MiB vfs partition, 512 sectors of
# 4 KiB, os.VfsLfs2) with the firmware's files on it, fed readings at the default intervals (energy 10 s, CO2
# 30 s, PM 60 s) through a timeline: ONLINE days uploading every 30 s, a network outage until the buffer is full
# and FULL days beyond, the catch-up in full batches (new readings keep coming), AFTER days online again.
#   micropython -X heapsize=12M bench_flash.py v1|v2 IMAGE_DIR ONLINE FULL AFTER
# IMAGE_DIR holds the files `airwatt flash` writes to a board (flash_cmd.firmware_image()) at their board paths.
# Prints one "RESULT {...}" line (a dict literal) for the host to format.
import gc
import os
import sys

from blockdev import BlockDev

kind, image_dir = sys.argv[1], sys.argv[2]
online, full_days, after = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
MNT = "/flash"
BOOT = "0a1b2c3d"
UPLOAD_MS = 30000

bd = BlockDev(None, block_size=4096, block_count=512)
os.VfsLfs2.mkfs(bd)
os.mount(os.VfsLfs2(bd), MNT)


def copy_image(src, dst):
    """Copy the folder src onto the flash at dst, as `airwatt flash` provisions a board; returns the bytes."""
    n = 0
    for entry in os.ilistdir(src):
        name = entry[0]
        if entry[1] == 0x4000:  # a folder
            os.mkdir(dst + "/" + name)
            n += copy_image(src + "/" + name, dst + "/" + name)
            continue
        with open(src + "/" + name, "rb") as f:
            data = f.read()
        with open(dst + "/" + name, "wb") as g:
            g.write(data)
        n += len(data)
    return n


# The firmware's files take their room, as on a provisioned board.
fw_bytes = copy_image(image_dir, MNT)
st = os.statvfs(MNT)
free0 = st[3] * st[0]
gc.collect()

from protocol import wire  # noqa: E402

if kind == "v1":
    from store import Store
    log = Store(MNT + "/data", capacity=20000)  # today's default capacity
else:
    import clog
    log = clog.Log(MNT + "/data")
bd.track_wear()
w0, p0 = bd.writes, bd.programmed


class Sensors:
    """Readings at the default mix with values that move as real ones do (deterministic)."""

    def __init__(self):
        self.x = 12345
        self.v, self.i, self.p, self.e = 2298, 4512, 10123, 1234567
        self.ms = 0

    def rnd(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n

    def step(self):
        """Advance 10 s; returns the readings due: [(kind, values)]."""
        self.ms += 10000
        out = []
        self.v += self.rnd(11) - 5
        self.i = max(0, self.i + self.rnd(81) - 40)
        self.p = max(0, self.p + self.rnd(181) - 90)
        self.e += self.rnd(5)
        out.append(("energy", {"voltage": self.v / 10, "current": self.i / 1000, "power": self.p / 10,
                               "energy_wh": self.e, "frequency": 49.9 + self.rnd(3) / 10,
                               "pf": 0.9 + self.rnd(6) / 100}))
        if self.ms % 30000 == 0:
            out.append(("co2", {"co2": 800 + self.rnd(60), "temperature": 27 + self.rnd(100) / 100,
                                "humidity": 60 + self.rnd(200) / 100}))
        if self.ms % 60000 == 0:
            out.append(("pm", {"pm1": 5 + self.rnd(10), "pm25": 10 + self.rnd(30), "pm10": 20 + self.rnd(40)}))
        return out


sens = Sensors()
WALL0 = 1790000000


def sample():
    for k, v in sens.step():
        seq = log.next_seq
        t = WALL0 + sens.ms // 1000
        if kind == "v1":
            log.append(seq, wire.encode_reading(seq, t, sens.ms, BOOT, k, v, []))
        else:
            log.add(seq, BOOT, t, sens.ms, k, v, [])
    if kind == "v2":
        log.tick(sens.ms)


STATUS = wire.encode_status(600, 81234, -67, 3, 0, {"co2": 0, "energy": 0, "pm": 0}, "agent")
posts = [0, 0, 0]  # POSTs, readings, body bytes
measure = [False, 0, 0]  # on, peak allocated heap for a batch (above the base), base


def peak():
    gc.collect()
    measure[1] = max(measure[1], gc.mem_alloc() - measure[2])


def upload():
    """One POST's worth, the bytes the uplink sends, acked at once; returns readings sent. The peak heap is the
    board's way: v1 builds the body whole; v2 plans the batch and reads it back a piece at a time (here the
    bytes are then joined to count them, which the uplink never does)."""
    if kind == "v1":
        recs = log.pending(50, 8192 - 96 - 15 - 5 - len(STATUS))
        if not recs:
            return 0
        body = wire.batch_body("kk-city-hall-01", "0.1.0", BOOT, sens.ms, [r[1] for r in recs], STATUS)
        first, last = recs[0][0], recs[-1][0]
    else:
        if log.uncommitted:
            log.flush()
        raw = (8192 - 110 - 15 - 5 - len(STATUS)) * 3 // 4 // 48 * 48
        first, n, k, frames = log.plan_pending(raw)
        if not n:
            return 0
        if measure[0]:
            for i, p in enumerate(log.stream_pending(first, frames)):  # as the uplink signs or sends it
                if i % 16 == 0:
                    peak()
        data = bytearray()
        for p in log.stream_pending(first, frames):
            data.extend(p)  # each piece is a view of the log's buffers: copied as it comes
        body = wire.batch_body_v2("kk-city-hall-01", "0.2.0", BOOT, sens.ms, first, n, data, STATUS)
        last = first + n - 1
    if measure[0] and kind == "v1":
        peak()
    posts[0] += 1
    posts[1] += last - first + 1
    posts[2] += len(body)
    log.ack(last)
    return last - first + 1


def run_online(days):
    for s in range(int(days * 8640)):
        sample()
        if sens.ms % UPLOAD_MS == 0:
            while upload():
                pass


run_online(online)
# Outage: no uploads until the buffer drops its first reading, then FULL days more.
readings0 = log.next_seq - 1
while log.dropped == 0:
    sample()
held = log.depth
hours = held / 0.15 / 3600
for s in range(int(full_days * 8640)):
    sample()
# Catch-up: full batches back to back (one every 10 s of board time), new readings keep coming.
posts[:] = [0, 0, 0]
gc.collect()
measure[:] = [True, 0, gc.mem_alloc()]
while log.depth > 3:
    sample()
    upload()
measure[0] = False
heap = measure[1]
catch = posts[:]
run_online(after)
total = log.next_seq - 1
days = total / 12960
mx = bd.max_erases()
erases = sum(bd.erases)
result = {
    "store": kind, "firmware_bytes": fw_bytes, "free_bytes": free0, "held": held, "hours": hours,
    "readings": total, "days": days, "erases_per_reading": erases / total,
    "bytes_per_reading": (bd.programmed - p0) / total, "max_erases": mx,
    "life_years": 100000 / (mx / days) / 365 if mx else 0, "catchup_posts": catch[0], "catchup_readings": catch[1],
    "catchup_bytes": catch[2], "wire_per_reading": catch[2] / catch[1] if catch[1] else 0,
    "per_post": catch[1] / catch[0] if catch[0] else 0, "peak_heap_per_batch": heap, "dropped": log.dropped,
}
print("RESULT %r" % (result,))
