# MicroPython scripts for tests/firmware/test_ota.py: `micropython ota_cases.py CASE [ARGS]`.
# The update's flash side (firmware/ota.py staging, the switch, boot.py's chooser, the probation's confirm) on a
# real LittleFS over the emulated NOR flash of emulator/board/blockdev.py, beside the reading log
# (firmware/clog.py). The network is replaced by the release's bytes in RAM; everything that touches the flash
# is the firmware's own code. Each case prints what it checked and ends with "OK".
import asyncio
import gc
import hashlib
import json
import os
import sys
from binascii import hexlify

from blockdev import BlockDev, PowerCut
import flash_mount
from clog import Log
from protocol import wire
import ota

MNT = "/flash"
ROOT = MNT + "/fw"
KEY = b"k" * 32
DEVICE = "kk-ota-01"
NEW = "0.3.0"
BOOT = "0a1b2c3d"
HERE = __file__[: __file__.rfind("/")] if "/" in __file__ else "."
with open(HERE + "/../../firmware/boot.py") as _f:
    CHOOSER = _f.read().replace('"/fw/', '"%s/' % ROOT)  # the real chooser, its folder moved under MNT


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def release():
    """A release's files: deterministic bytes of the sizes of small compiled modules."""
    files = {}
    for path, size in (("board.mpy", 5300), ("ota.mpy", 2600), ("protocol/wire.mpy", 1900),
                       ("protocol/__init__.py", 0)):
        files[path] = bytes([(i * 131 + len(path)) & 255 for i in range(size)])
    return files


FILES = release()
MANIFEST = json.dumps({"version": NEW, "device": DEVICE, "files": [
    [p, len(FILES[p]), hexlify(hashlib.sha256(FILES[p]).digest()).decode()] for p in sorted(FILES)]}).encode()
OFFER = {"version": NEW, "size": sum([len(b) for b in FILES.values()]), "probation_s": 60}


class Reboot(Exception):
    pass


class Clock:
    def ms(self):
        return 0


class Sensor:
    outcome = (True, {})


class Board:
    def __init__(self, store, corrupt=False):
        self.cfg = {"device": DEVICE, "key": hexlify(KEY).decode()}
        self.store = store
        self.clock = Clock()
        self.sampler = self
        self.sensors = [Sensor()]
        self.uplink = self
        self.sent = 1
        self.progress = 0
        self.corrupt = corrupt
        self.forged = False


class Ota(ota.Ota):
    """The firmware's Ota with the agent's answers from RAM and a reset that ends this boot."""

    async def _get(self, path, limit):
        if path.endswith("/manifest"):
            if self.board.forged:  # another key's signature, or a manifest changed after signing
                return 200, wire.sign(b"x" * 32, MANIFEST), MANIFEST
            return 200, wire.sign(KEY, MANIFEST), MANIFEST
        q = path[path.find("?") + 1:].split("&")
        name, off, n = q[0][5:], int(q[1][7:]), int(q[2][7:])
        data = FILES[name][off:off + n]
        if self.board.corrupt and name == "ota.mpy" and off == 0:
            data = b"X" + data[1:]
        return 200, "", data

    def _reset(self):
        st = self.board.store
        if st.uncommitted:
            st.flush()
        raise Reboot()


def mount(bd):
    flash_mount.mount(bd, MNT)


class Machine:
    """What boot.py asks of `machine`: why this boot (a power cut: PWRON_RESET; the firmware's reset: HARD)."""
    PWRON_RESET, HARD_RESET = 1, 2
    cause = 1

    @classmethod
    def reset_cause(cls):
        return cls.cause


sys.modules["machine"] = Machine


def choose():
    """Run boot.py's chooser; the version folder it put on sys.path, or "" for the flashed /lib."""
    saved = sys.path[:]
    g = {"__name__": "boot"}
    exec(CHOOSER, g)
    chosen = [p for p in sys.path if p.startswith(ROOT + "/")]
    sys.path[:] = saved
    return chosen[0][len(ROOT) + 1:] if chosen else ""


def complete(version):
    """The chosen version's folder holds every file of its release, intact."""
    if not version:
        return True
    buf = bytearray(512)
    for path in FILES:
        if ota.file_sha(ROOT + "/" + version + "/" + path, buf) != hexlify(hashlib.sha256(FILES[path]).digest()).decode():
            return False
    return True


def reading(log):
    log.add(log.next_seq, BOOT, None, log.next_seq * 1000, "co2", {"co2": 400 + log.next_seq}, [])


def verify(log, what, least):
    """Every committed reading from the cursor on is there, in order, no gap; at least `least` were committed."""
    last = log._committed - 1
    seqs = [r[0] for r in log.pending(100000, 1 << 30)]
    check(seqs == list(range(log.cursor + 1, last + 1)), "%s: pending seqs broken: %r" % (what, seqs[:3]))
    check(last >= least, "%s: committed readings lost: last %d < %d" % (what, last, least))


def fresh():
    bd = BlockDev(None, block_size=4096, block_count=48)
    os.VfsLfs2.mkfs(bd)
    mount(bd)
    log = Log(MNT + "/data", capacity=2000, window_s=60)
    for _ in range(30):
        reading(log)
    log.flush()
    log.ack(10)
    return bd


def life(bd, phases, seen=None, fail=False):
    """Boots until the release is confirmed (with `fail`: until its failed probation is rolled back): chooser,
    probation, readings, stage, switch. Returns the boots."""
    boots = 0
    while True:
        boots += 1
        check(boots < 8, "no end to the update")
        phases[0] = "chooser"
        v = choose()
        phases[0] = "log"
        log = Log(MNT + "/data", capacity=2000, window_s=60)
        for _ in range(3):
            reading(log)
        log.flush()
        if seen is not None:
            seen[0] = log._committed - 1
        b = Board(log)
        if fail and v == NEW:  # the new version's self-test fails, and its window ends
            b.sensors[0] = type("Bad", (), {"outcome": (False, "no answer")})()
            b.clock.ms = _ticking()
        u = Ota(b, log=lambda m: None, root=ROOT, running=v or "0.2.0")
        try:
            if u.state == "probation":
                phases[0] = "confirm" if not fail else "why"
                asyncio.run(u.probation())
            if (u.state == "confirmed" and v == NEW) or u.state == "rolled-back":
                return boots
            u.offer(OFFER)
            if u.offered is None:
                raise AssertionError("offer refused in state %s: %r" % (u.state, u.pointer))
            phases[0] = "stage"
            why = asyncio.run(u.stage(OFFER))
            check(why is None, "stage: %s" % why)
            phases[0] = "switch"
            u.switch(OFFER)
        except Reboot:
            Machine.cause = Machine.HARD_RESET


def case_update():
    """No cut: staged, switched, on probation, confirmed; the old folders pruned; flash the staged copy took."""
    bd = fresh()
    log = Log(MNT + "/data", capacity=2000, window_s=60)
    free0 = os.statvfs(MNT)[3]
    u = Ota(Board(log), log=print, root=ROOT, running="0.2.0")
    check(asyncio.run(u.stage(OFFER)) is None, "stage")
    staged = free0 - os.statvfs(MNT)[3]
    print("STAGED %d blocks of %d bytes for %d bytes of files" % (staged, os.statvfs(MNT)[0], OFFER["size"]))
    boots = life(bd, [None])
    check(read_state() == ["ok", NEW, "", "", "", "0"], "pointer %r" % read_state())
    check(sorted([e[0] for e in os.ilistdir(ROOT)]) == [NEW, "boot"], "folders %r" % list(os.ilistdir(ROOT)))
    print("UPDATE confirmed after %d boots" % boots)


def read_state():
    return ota.read_pointer(ROOT)


def case_corrupt():
    """A file that does not match its SHA-256 is refused and removed, nothing switches; the retry succeeds."""
    fresh()
    log = Log(MNT + "/data", capacity=2000, window_s=60)
    b = Board(log, corrupt=True)
    u = Ota(b, log=print, root=ROOT, running="0.2.0")
    why = asyncio.run(u.stage(OFFER))
    check(why is not None and "SHA-256" in why and "ota.mpy" in why, "corrupt: %r" % why)
    check(choose() == "" and read_state()[0] == "ok", "switched after a refused download")
    b.corrupt = False
    check(asyncio.run(u.stage(OFFER)) is None, "retry")
    print("CORRUPT refused: %s; retried: staged" % why)


def case_forged():
    """A manifest whose HMAC is not the device key's is refused before anything is written."""
    fresh()
    log = Log(MNT + "/data", capacity=2000, window_s=60)
    b = Board(log)
    b.forged = True
    why = asyncio.run(Ota(b, log=print, root=ROOT, running="0.2.0").stage(OFFER))
    check(why == "manifest signature does not match the device key: refused", why)
    check(not ota._is_dir(ROOT + "/" + NEW), "wrote files of a forged manifest")
    print("FORGED %s" % why)


def case_no_room():
    """Staging refuses rather than take flash the reading log needs for its capacity."""
    fresh()
    log = Log(MNT + "/data", capacity=9000, window_s=60)  # ~144 KB of the 192 KB flash
    u = Ota(Board(log), log=print, root=ROOT, running="0.2.0")
    try:
        asyncio.run(u.stage(OFFER))
    except ValueError as e:
        check("no room" in str(e), str(e))
        print("NOROOM %s" % e)
    else:
        raise AssertionError("staged into the log's room")
    check(not ota._is_dir(ROOT + "/" + NEW) or not os.listdir(ROOT + "/" + NEW), "files written")


def case_rollback():
    """A version that does not confirm (self-test fails) goes back to the previous one, with the reason."""
    fresh()
    log = Log(MNT + "/data", capacity=2000, window_s=60)
    u = Ota(Board(log), log=print, root=ROOT, running="0.2.0")
    check(asyncio.run(u.stage(OFFER)) is None, "stage")
    try:
        u.switch(OFFER)
    except Reboot:
        Machine.cause = Machine.HARD_RESET
    check(choose() == NEW, "probation boot")
    b = Board(log)
    b.sensors[0] = type("Bad", (), {"outcome": (False, "no answer")})()
    u = Ota(b, log=print, root=ROOT, running=NEW)
    check(u.state == "probation", u.state)
    u.board.clock.ms = _ticking()
    try:
        asyncio.run(u.probation())
    except Reboot:
        Machine.cause = Machine.HARD_RESET
    check(choose() == "", "not rolled back")
    u = Ota(Board(log), log=print, root=ROOT, running="0.2.0")
    check(u.report() == {"run": "0.2.0", "target": NEW, "state": "rolled-back",
                         "error": "self-test failed in probation"}, "report %r" % u.report())
    u.offer(OFFER)
    check(u.offered is None, "took again the version that rolled back")
    print("ROLLBACK %r" % u.report())


def _ticking():
    t = [0]

    def ms():
        t[0] += 100000
        return t[0]
    return ms


def case_rollback_cuts():
    """Cut the power at every flash write of an update whose new version fails its probation: stage, switch,
    the chooser's two renames, the reason kept; after each, a complete version boots, no committed reading is
    lost, and the board ends on the previous version, reporting the rollback."""
    bd = fresh()
    image = bytes(bd.data)
    bd = BlockDev(None, block_size=4096, block_count=48, data=bytearray(image))
    mount(bd)
    life(bd, [None], fail=True)
    total = bd.writes
    kinds = {}
    for n in range(1, total + 1):
        bd = BlockDev(None, block_size=4096, block_count=48, data=bytearray(image))
        mount(bd)
        bd.cut_after_writes, bd.cut_keep = n, 33
        phase, seen = [None], [0]
        try:
            life(bd, phase, seen, fail=True)
        except PowerCut:
            pass
        else:
            raise AssertionError("cut %d never happened" % n)
        kinds[phase[0]] = kinds.get(phase[0], 0) + 1
        bd = bd.power_on()
        Machine.cause = Machine.PWRON_RESET
        mount(bd)
        v = choose()
        check(complete(v), "cut %d in %s: chose %r, which is not complete" % (n, phase[0], v))
        mount(bd)
        life(bd, [None], fail=True)
        verify(Log(MNT + "/data", capacity=2000, window_s=60), "cut %d in %s" % (n, phase[0]), seen[0])
        p = read_state()
        check(p[:4] == ["ok", "", "", NEW] and p[4] and choose() == "",
              "cut %d in %s: not rolled back: %r" % (n, phase[0], p))
        gc.collect()
    print("ROLLBACKCUTS %d %r" % (total, sorted(kinds.items())))


def case_power_cuts():
    """Cut the power at every flash write and erase of an update (stage, switch, chooser, confirm, the log's
    own writes between); after each: the chooser boots a complete version, no committed reading is lost, and
    the update then finishes."""
    keep = int(sys.argv[2])
    bd = fresh()
    image = bytes(bd.data)
    bd = BlockDev(None, block_size=4096, block_count=48, data=bytearray(image))
    mount(bd)
    life(bd, [None])
    total = bd.writes
    kinds = {}
    for n in range(1, total + 1):
        bd = BlockDev(None, block_size=4096, block_count=48, data=bytearray(image))
        mount(bd)
        bd.cut_after_writes, bd.cut_keep = n, keep
        phase, seen = [None], [0]
        try:
            life(bd, phase, seen)
        except PowerCut:
            pass
        else:
            raise AssertionError("cut %d never happened" % n)
        kinds[phase[0]] = kinds.get(phase[0], 0) + 1
        bd = bd.power_on()
        Machine.cause = Machine.PWRON_RESET
        mount(bd)
        least = seen[0]
        v = choose()
        check(complete(v), "cut %d in %s: chose %r, which is not complete" % (n, phase[0], v))
        mount(bd)
        life(bd, [None])
        log = Log(MNT + "/data", capacity=2000, window_s=60)
        verify(log, "cut %d in %s" % (n, phase[0]), least)
        check(read_state()[:2] == ["ok", NEW] and choose() == NEW and complete(NEW),
              "cut %d in %s: update did not finish: %r" % (n, phase[0], read_state()))
        gc.collect()
    print("OTACUTS %d WRITES %d keep=%d %r" % (total, total, keep, sorted(kinds.items())))


globals()["case_" + sys.argv[1]]()
print("OK")
