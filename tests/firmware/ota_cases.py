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
FACTORY = "0.2.0"  # flashed in /lib
NEW = "0.3.0"
NEXT = "0.4.0"
LAST = "0.5.0"
ORDER = [FACTORY, NEW, NEXT, LAST]
BOOT = "0a1b2c3d"
HERE = __file__[: __file__.rfind("/")] if "/" in __file__ else "."
with open(HERE + "/../../firmware/boot.py") as _f:
    CHOOSER = _f.read().replace('"/fw/', '"%s/' % ROOT)  # the real chooser, its folder moved under MNT


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# The power-cut campaigns stage smaller files: still a file over two blocks, one of several chunks, one inline and
# an empty one in a package folder, so every kind of write is hit, in fewer cuts.
CUTS = sys.argv[1].endswith("_cuts")
SIZES = (("board.mpy", 4500), ("ota.mpy", 1100), ("protocol/wire.mpy", 300), ("protocol/__init__.py", 0)) if CUTS \
    else (("board.mpy", 5300), ("ota.mpy", 2600), ("protocol/wire.mpy", 1900), ("protocol/__init__.py", 0))


def release(n):
    """Release n's files: deterministic bytes of the sizes of small compiled modules, each release its own."""
    files = {}
    for path, size in SIZES:
        files[path] = bytes([(i * 131 + len(path) + n) & 255 for i in range(size)])
    return files


def sha(data):
    return hexlify(hashlib.sha256(data).digest()).decode()


RELEASES = {v: release(i) for i, v in enumerate(ORDER)}
MANIFESTS = {v: json.dumps({"version": v, "device": DEVICE, "files": [
    [p, len(f[p]), sha(f[p])] for p in sorted(f)]}).encode() for v, f in RELEASES.items()}
OFFERS = {v: {"version": v, "size": sum([len(b) for b in f.values()]), "probation_s": 60}
          for v, f in RELEASES.items()}
FILES, OFFER = RELEASES[NEW], OFFERS[NEW]
CAP = [2000]  # the reading log's capacity in every boot of a case
BLOCKS = 64  # 256 KB of flash: the log, the flashed /lib and two versions more


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
        self.phases = [None]


class Ota(ota.Ota):
    """The firmware's Ota with the agent's answers from RAM and a reset that ends this boot."""

    def cleanup(self, keep):
        was, self.board.phases[0] = self.board.phases[0], "cleanup"
        ota.Ota.cleanup(self, keep)
        self.board.phases[0] = was

    async def _get(self, path, limit):
        v = path.split("/")[3]
        if path.endswith("/manifest"):
            if self.board.forged:  # another key's signature, or a manifest changed after signing
                return 200, wire.sign(b"x" * 32, MANIFESTS[v]), MANIFESTS[v]
            return 200, wire.sign(KEY, MANIFESTS[v]), MANIFESTS[v]
        q = path[path.find("?") + 1:].split("&")
        name, off, n = q[0][5:], int(q[1][7:]), int(q[2][7:])
        data = RELEASES[v][name][off:off + n]
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
    """The chosen version's folder ("": the flashed /lib) holds every file of its release, intact."""
    folder = ROOT + "/" + version if version else MNT + "/lib"
    files = RELEASES[version or FACTORY]
    buf = bytearray(512)
    for path in files:
        if ota.file_sha(folder + "/" + path, buf) != sha(files[path]):
            return False
    return True


def versions():
    """The versions whose files take flash: the flashed /lib (while it holds anything) and each /fw folder."""
    got = [FACTORY] if ota._is_dir(MNT + "/lib") and os.listdir(MNT + "/lib") else []
    if ota._is_dir(ROOT):
        got += sorted([e[0] for e in os.ilistdir(ROOT) if ota._is_dir(ROOT + "/" + e[0])])
    return got


def flash_lib():
    """What `airwatt flash` writes: the factory release in /lib."""
    for path, data in RELEASES[FACTORY].items():
        d = MNT
        for part in ["lib"] + path.split("/")[:-1]:
            d += "/" + part
            if not ota._is_dir(d):
                os.mkdir(d)
        with open(MNT + "/lib/" + path, "wb") as f:
            f.write(data)


def reading(log):
    log.add(log.next_seq, BOOT, None, log.next_seq * 1000, "co2", {"co2": 400 + log.next_seq}, [])


def verify(log, what, least):
    """Every committed reading from the cursor on is there, in order, no gap; at least `least` were committed."""
    last = log._committed - 1
    seqs = [r[0] for r in log.pending(100000, 1 << 30)]
    check(seqs == list(range(log.cursor + 1, last + 1)), "%s: pending seqs broken: %r" % (what, seqs[:3]))
    check(last >= least, "%s: committed readings lost: last %d < %d" % (what, last, least))


def fresh():
    bd = BlockDev(None, block_size=4096, block_count=BLOCKS)
    os.VfsLfs2.mkfs(bd)
    mount(bd)
    flash_lib()
    log = Log(MNT + "/data", capacity=CAP[0], window_s=60)
    for _ in range(30):
        reading(log)
    log.flush()
    log.ack(10)
    return bd


def life(bd, phases, seen=None, fail=False, target=NEW, say=lambda m: None):
    """Boots until release `target` (or a later one) is confirmed (with `fail`: until its failed probation is
    rolled back): chooser, probation, readings, stage, switch, the cleanup of superseded versions. Every boot
    chooses a complete version, and no more than two versions ever take flash. Returns the boots."""
    boots = 0
    while True:
        boots += 1
        check(boots < 8, "no end to the update")
        phases[0] = "chooser"
        v = choose()
        check(complete(v), "boot %d chose %r, which is not complete" % (boots, v))
        phases[0] = "log"
        log = Log(MNT + "/data", capacity=CAP[0], window_s=60)
        for _ in range(3):
            reading(log)
        log.flush()
        if seen is not None:
            seen[0] = log._committed - 1
        b = Board(log)
        b.phases = phases
        if fail and v == target:  # the new version's self-test fails, and its window ends
            b.sensors[0] = type("Bad", (), {"outcome": (False, "no answer")})()
            b.clock.ms = _ticking()
        u = Ota(b, log=say, root=ROOT, running=v or FACTORY)
        try:
            if u.state == "probation":
                phases[0] = "confirm" if not fail else "why"
                asyncio.run(u.probation())
            if (u.state == "confirmed" and ORDER.index(v) >= ORDER.index(target)) or u.state == "rolled-back":
                return boots
            u.offer(OFFERS[target])
            if u.offered is None:
                raise AssertionError("offer refused in state %s: %r" % (u.state, u.pointer))
            phases[0] = "stage"
            why = asyncio.run(u.stage(OFFERS[target]))
            check(why is None, "stage: %s" % why)
            check(len(versions()) <= 2, "more than two versions on the flash: %r" % versions())
            phases[0] = "switch"
            u.switch(OFFERS[target])
        except Reboot:
            Machine.cause = Machine.HARD_RESET


def journey(bd, phases, seen=None):
    """The factory firmware updated twice: NEW confirmed, then NEXT confirmed."""
    life(bd, phases, seen, target=NEW)
    life(bd, phases, seen, target=NEXT)


def case_update():
    """No cut: staged, switched, on probation, confirmed; the old folders pruned; flash the staged copy took."""
    bd = fresh()
    log = Log(MNT + "/data", capacity=CAP[0], window_s=60)
    free0 = os.statvfs(MNT)[3]
    u = Ota(Board(log), log=print, root=ROOT, running="0.2.0")
    check(asyncio.run(u.stage(OFFER)) is None, "stage")
    staged = free0 - os.statvfs(MNT)[3]
    print("STAGED %d blocks of %d bytes for %d bytes of files" % (staged, os.statvfs(MNT)[0], OFFER["size"]))
    boots = life(bd, [None])
    check(read_state() == ["ok", NEW, "", "", "", "0"], "pointer %r" % read_state())
    check(sorted([e[0] for e in os.ilistdir(ROOT)]) == [NEW, "boot"], "folders %r" % list(os.ilistdir(ROOT)))
    check(versions() == [NEW], "superseded versions left: %r" % versions())
    print("UPDATE confirmed after %d boots" % boots)


class Hoarder(Ota):
    """An Ota that never deletes a superseded version: what the flash would need without the cleanup."""

    def cleanup(self, keep):
        pass


def case_again():
    """Update after update on a flash where the reading log leaves room for one staged release and no more:
    each staging fits because the confirm before it deleted the superseded version (the flashed /lib first);
    without that cleanup the second staging is refused."""
    global Ota
    bd = fresh()
    log = Log(MNT + "/data", capacity=CAP[0], window_s=60)
    u = Ota(Board(log), log=print, root=ROOT, running=FACTORY)
    st = os.statvfs(MNT)
    need = u._room([[p, len(d), sha(d)] for p, d in FILES.items()], ROOT + "/" + NEW)[0]
    # The log's capacity leaves free, once it is full, the planned blocks of one release and half of another.
    CAP[0] = log.depth + (st[3] - need - need // 2) * st[0] // ota._LOG_BYTES_PER_READING
    log = Log(MNT + "/data", capacity=CAP[0], window_s=60)
    print("AGAIN flash %d blocks, free %d, one release plans %d, log capacity %d readings" % (
        st[2], st[3], need, CAP[0]))
    image = bytes(bd.data)
    for target in (NEW, NEXT, LAST):
        life(None, [None], target=target, say=print)
        check(versions() == [target] and choose() == target and complete(target), "%s: %r" % (target, versions()))
        print("AGAIN %s confirmed, free %d blocks" % (target, os.statvfs(MNT)[3]))
    verify(Log(MNT + "/data", capacity=CAP[0], window_s=60), "again", 30)
    bd = BlockDev(None, block_size=4096, block_count=BLOCKS, data=bytearray(image))
    mount(bd)
    plain, Ota = Ota, Hoarder
    try:
        life(bd, [None], target=NEW)
        life(bd, [None], target=NEXT)
    except (AssertionError, ValueError) as e:
        check("no room" in str(e), str(e))
        print("HOARDER %s" % e)
    else:
        raise AssertionError("three versions fit: the case does not test the cleanup")
    finally:
        Ota = plain


def read_state():
    return ota.read_pointer(ROOT)


def case_partial():
    """A confirmed version that lacks a module of the flashed /lib (sys.path still finds it there) keeps /lib."""
    fresh()
    with open(MNT + "/lib/extra.mpy", "wb") as f:
        f.write(b"M" * 300)
    life(None, [None], target=NEW, say=print)
    check(read_state()[:2] == ["ok", NEW] and os.listdir(MNT + "/lib") and complete(""), "lib %r" % versions())
    print("PARTIAL %s confirmed, the flashed /lib kept: %r" % (NEW, versions()))


def case_corrupt():
    """A file that does not match its SHA-256 is refused and removed, nothing switches; the retry succeeds."""
    fresh()
    log = Log(MNT + "/data", capacity=CAP[0], window_s=60)
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
    log = Log(MNT + "/data", capacity=CAP[0], window_s=60)
    b = Board(log)
    b.forged = True
    why = asyncio.run(Ota(b, log=print, root=ROOT, running="0.2.0").stage(OFFER))
    check(why == "manifest signature does not match the device key: refused", why)
    check(not ota._is_dir(ROOT + "/" + NEW), "wrote files of a forged manifest")
    print("FORGED %s" % why)


def case_no_room():
    """Staging refuses rather than take flash the reading log needs for its capacity."""
    fresh()
    log = Log(MNT + "/data", capacity=13000, window_s=60)  # ~208 KB of the 256 KB flash
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
    log = Log(MNT + "/data", capacity=CAP[0], window_s=60)
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


def campaign(run, keep, finished):
    """Cut the power at each flash write and erase of run(bd, phases, seen) on a fresh board, one cut a run:
    after each the chooser boots a complete version, run then finishes from there, no committed reading is
    lost, and finished(what) checks where it ended. AIRWATT_SHARD=k/n (micropython_plugin.run_micropython_shards):
    only every n-th cut from the (k+1)-th. Returns (writes of the whole run, cuts made, {phase: cuts})."""
    k, n_shards = map(int, (os.getenv("AIRWATT_SHARD") or "0/1").split("/"))
    bd = fresh()
    image = bytes(bd.data)
    bd = BlockDev(None, block_size=4096, block_count=BLOCKS, data=bytearray(image))
    mount(bd)
    run(bd, [None])
    total = bd.writes
    kinds = {}
    for n in range(1 + k, total + 1, n_shards):
        bd = BlockDev(None, block_size=4096, block_count=BLOCKS, data=bytearray(image))
        mount(bd)
        bd.cut_after_writes, bd.cut_keep = n, keep
        phase, seen = [None], [0]
        try:
            run(bd, phase, seen)
        except PowerCut:
            pass
        else:
            raise AssertionError("cut %d never happened" % n)
        what = "cut %d in %s" % (n, phase[0])
        kinds[phase[0]] = kinds.get(phase[0], 0) + 1
        bd = bd.power_on()
        Machine.cause = Machine.PWRON_RESET
        mount(bd)
        v = choose()
        check(complete(v), "%s: chose %r, which is not complete" % (what, v))
        mount(bd)
        run(bd, [None])
        verify(Log(MNT + "/data", capacity=CAP[0], window_s=60), what, seen[0])
        finished(what)
        gc.collect()
    return total, sum(kinds.values()), sorted(kinds.items())


def case_rollback_cuts():
    """Cut the power at every flash write of an update whose new version fails its probation: stage, switch,
    the chooser's two renames, the reason kept; after each, a complete version boots, no committed reading is
    lost, and the board ends on the previous version (the flashed /lib, kept), reporting the rollback."""
    def finished(what):
        p = read_state()
        check(p[:4] == ["ok", "", "", NEW] and p[4] and choose() == "" and complete(""),
              "%s: not rolled back: %r" % (what, p))

    total, cuts, kinds = campaign(lambda bd, phases, seen=None: life(bd, phases, seen, fail=True), 33, finished)
    print("CUTS %d WRITES %d %r" % (cuts, total, kinds))


def case_power_cuts():
    """Cut the power at every flash write and erase of two updates in a row (stage, switch, chooser, confirm,
    the cleanup of the superseded versions, the log's own writes between): the flashed /lib, then NEW
    confirmed (which deletes /lib), then NEXT confirmed (which deletes NEW's folder). After each cut the chooser
    boots a complete version, no committed reading is lost, and the updates then finish with NEXT alone."""
    keep = int(sys.argv[2])

    def finished(what):
        check(read_state()[:2] == ["ok", NEXT] and choose() == NEXT and complete(NEXT),
              "%s: updates did not finish: %r" % (what, read_state()))
        if versions() != [NEXT]:  # cut in the cleanup after a confirm: the next staging finishes it, as here
            check(len(versions()) == 2, "%s: versions %r" % (what, versions()))
            u = Ota(Board(Log(MNT + "/data", capacity=CAP[0], window_s=60)), log=lambda m: None, root=ROOT,
                    running=NEXT)
            u.cleanup((NEXT, "", LAST))
            check(versions() == [NEXT], "%s: the cleanup left %r" % (what, versions()))

    total, cuts, kinds = campaign(journey, keep, finished)
    print("CUTS %d WRITES %d %r" % (cuts, total, kinds))


globals()["case_" + sys.argv[1]]()
print("OK")
