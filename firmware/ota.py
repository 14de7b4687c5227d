# Firmware updates over the upload channel. The agent's answer offers a release (answer.firmware); this module
# fetches its manifest (HMAC-SHA256 with the device key, checked before anything is written) and its files in
# 1 KB chunks, checks each file's SHA-256, and stages them in /fw/<version>/ beside the running files. Then one
# rename of the boot pointer /fw/boot switches versions; boot.py (the chooser, never replaced by an update)
# puts the chosen version's folder on sys.path. The new version boots on probation: it must pass its self-test
# and get one upload acknowledged within the offer's window, else it writes the reason to /fw/why and resets,
# and boot.py returns to the previous version, which reports `rolled-back` with that reason.
#
# /fw/boot, one field a line: state (ok | try | trying), version ("" is the flashed /lib), previous version,
# version that rolled back, why, probation seconds. Written to /fw/boot.tmp, then renamed over: a power cut
# leaves the old pointer or the new one. The folders a pointer names are complete before it is written, and
# never touched while a pointer names them. A confirm deletes the superseded versions (the previous folder, and
# the flashed /lib once the confirmed version holds all of its modules), so at most two versions ever take flash:
# the running one and one staged or on probation, and every update fits where the first one did. The reading
# log (/data) is never written here, and staging refuses a release whose files would take flash the log still
# needs to reach its capacity.
import asyncio
import gc
import hashlib
import json
import os
from binascii import hexlify, unhexlify

from protocol import canonical
from uplink import exchange

ROOT = "/fw"
_CHUNK = 1024  # bytes a request: fits the heap beside the uplink's buffers
_RETRY_MS = 5000
_RETRY_CAP_MS = 300000
_MARGIN_BLOCKS = 8  # LittleFS metadata and relocations beyond the folders' pairs (measured: tests/firmware/test_ota.py)
_LOG_BYTES_PER_READING = 16  # clog.BYTES_PER_READING: the log's planning figure


def read_pointer(root=ROOT):
    """The boot pointer as [state, version, previous, failed, why, probation_s]; the flashed /lib if none."""
    try:
        with open(root + "/boot") as f:
            p = f.read().split("\n")
    except OSError:
        p = []
    return (p + ["ok", "", "", "", "", "0"][len(p):])[:6]


def write_pointer(p, root=ROOT):
    """Replace the boot pointer in one rename (the switch)."""
    tmp = root + "/boot.tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(p))
    os.rename(tmp, root + "/boot")


def _is_dir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def remove_tree(path):
    if not _is_dir(path):
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for name in [e[0] for e in os.ilistdir(path)]:
        remove_tree(path + "/" + name)
    os.rmdir(path)


def _shadows(folder, lib):
    """True when folder has each module of lib (x.py or x.mpy for either, a package by its folder)."""
    for e in os.ilistdir(lib):
        name = e[0]
        if _is_dir(lib + "/" + name):
            found = _is_dir(folder + "/" + name)
        else:
            stem = name[:name.rfind(".")] if "." in name else name
            found = _exists(folder + "/" + stem + ".mpy") or _exists(folder + "/" + stem + ".py")
        if not found:
            return False
    return True


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def file_sha(path, buf):
    """Hex SHA-256 of a file read through buf, or None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(memoryview(buf)[:n])
    except OSError:
        return None
    return hexlify(h.digest()).decode()


def _clean(text):
    return "".join([ch if " " <= ch <= "~" and ch not in "\"\\" else "?" for ch in str(text)])[:80]


def check_manifest(m, version, device):
    """The manifest's files as [(path, size, sha256)]; ValueError naming what is wrong."""
    if not isinstance(m, dict) or m.get("version") != version or m.get("device") != device:
        raise ValueError("manifest is not for %s on this device" % version)
    files = m.get("files")
    if not isinstance(files, list) or not files:
        raise ValueError("manifest has no files")
    out = []
    for f in files:
        path, size, sha = f
        if (not isinstance(path, str) or not 0 < len(path) <= 48 or ".." in path or path[0] == "/"
                or not isinstance(size, int) or size < 0 or not isinstance(sha, str) or len(sha) != 64):
            raise ValueError("manifest entry %r is not a file" % (path,))
        for ch in path:
            if not ("a" <= ch <= "z" or "0" <= ch <= "9" or ch in "_./"):
                raise ValueError("manifest path %r" % path)
        out.append((path, size, sha))
    return out


class Ota:
    """The board's side of an update. `offer` is the uplink's on_firmware; `report` goes in every status;
    `run` is a board task."""

    def __init__(self, board, log=print, root=ROOT, running="0"):
        self.board = board
        self.log = log
        self.root = root
        self.lib = root[:root.rfind("/")] + "/lib"  # the flashed version, beside /fw
        self.running = running  # board.VERSION
        self.pointer = p = read_pointer(root)
        self.offered = None
        self.error = ""
        if p[0] == "trying" and p[1]:
            self.state, self.target = "probation", p[1]
        elif p[0] == "try":  # boot.py could not mark it (flash full?): it runs the previous version
            self.state, self.target = "staged", p[1]
        elif p[3]:
            self.state, self.target, self.error = "rolled-back", p[3], _clean(p[4])
        elif p[1]:
            self.state, self.target = "confirmed", p[1]
        else:
            self.state, self.target = "idle", ""
        self.buf = None

    def report(self):
        return {"run": self.running, "target": self.target, "state": self.state, "error": self.error}

    def offer(self, o):
        """A checked answer's firmware offer: taken unless it is what runs or what was rolled back."""
        v = o["version"]
        if v == self.running or v == self.pointer[3] or self.state == "probation":
            return
        self.offered = o

    # -- probation

    def _selftest_passed(self):
        for s in self.board.sampler.sensors:
            if s.outcome is None or not s.outcome[0]:
                return False
        return True

    async def probation(self):
        """Confirm this version once its self-test passed and an upload was acknowledged, within the window;
        else keep the reason and reset into the previous version."""
        clock = self.board.clock
        window = int(self.pointer[5] or "0") * 1000 or 600000
        start = clock.ms()
        self.log("OTA %s on probation for %d s" % (self.target, window // 1000))
        while clock.ms() - start < window:
            if self._selftest_passed() and self.board.uplink.sent > 0:
                p = self.pointer
                self.pointer = ["ok", p[1], "", "", "", "0"]
                write_pointer(self.pointer, self.root)
                self.state = "confirmed"
                self.log("OTA %s confirmed" % p[1])
                self.cleanup((p[1],))
                return True
            await asyncio.sleep_ms(500)
        why = ("self-test failed in probation" if not self._selftest_passed()
               else "no upload acknowledged in %d s of probation" % (window // 1000))
        self._restart(why)
        return False

    def _restart(self, why):
        self.log("OTA %s: %s: back to the previous version" % (self.target, why))
        with open(self.root + "/why", "w") as f:
            f.write(why)
        self._reset()

    def _reset(self):
        st = self.board.store
        if getattr(st, "uncommitted", 0):
            st.flush()  # what was read stays: the reset must not cost the readings in RAM
        import machine
        machine.reset()

    def cleanup(self, keep):
        """Delete the versions that can no longer boot: every folder in /fw but `keep`, and the flashed /lib once
        the confirmed version holds each of its modules (sys.path puts that version first: nothing in /lib is
        imported again, and the pointer no longer names it). So at most two versions take flash: the one that
        runs and the one staged or on probation. Each deletion is of something no pointer names: a power cut in
        the middle leaves the chosen version whole, and the next confirm or staging finishes the job."""
        try:
            names = [e[0] for e in os.ilistdir(self.root)]
        except OSError:
            return
        for name in names:
            if name not in keep and _is_dir(self.root + "/" + name):
                remove_tree(self.root + "/" + name)
        p = self.pointer
        if p[0] == "ok" and p[1] and _is_dir(self.lib) and _shadows(self.root + "/" + p[1], self.lib):
            remove_tree(self.lib)
            self.log("OTA %s replaces every module of the flashed %s: removed it" % (p[1], self.lib))

    # -- fetch

    async def _get(self, path, limit):
        """GET path from the agent, signed like an upload; (status code, signature header, body)."""
        cfg = self.board.cfg
        timeout = cfg["http_timeout_s"] * 1000
        path = cfg["prefix"] + path
        sig = canonical.sign(unhexlify(cfg["key"]), b"GET " + path.encode())
        code, signature, body = await exchange(timeout, "GET", cfg["host"], cfg["port"], path,
                                               cfg["device"], sig, None, limit, b"x-airwatt-signature")
        return code, signature.decode() if signature else "", body

    def _room(self, files, folder):
        """(blocks to stage, free blocks, blocks the reading log keeps); ValueError when staging would take flash
        the log needs to reach its capacity."""
        st = os.statvfs(self.root)
        bsize, free = st[0], st[3]
        folders = {""}
        need = _MARGIN_BLOCKS
        for path, size, sha in files:
            folders.add(path[:path.rfind("/") + 1])
            if file_sha(folder + "/" + path, self.buf) != sha:
                need += (size + bsize - 1) // bsize
        need += 2 * (len(folders) + 1)  # a LittleFS folder is a metadata pair: two blocks (and /fw's)
        store = self.board.store
        log = (getattr(store, "capacity", 0) - store.depth) * _LOG_BYTES_PER_READING
        log_blocks = (log + bsize - 1) // bsize if log > 0 else 0
        if free - need < log_blocks:
            raise ValueError("no room: release needs %d blocks, %d free, reading log keeps %d" % (
                need, free, log_blocks))
        return need, free, log_blocks

    async def stage(self, o):
        """Fetch, check and stage release o in /fw/<version>; returns None when it is staged, else why not."""
        v = o["version"]
        cfg = self.board.cfg
        code, sig, body = await self._get("/v1/firmware/%s/manifest" % v, 8192)
        if code != 200:
            return "manifest: http %d" % code
        if not canonical.verify(unhexlify(cfg["key"]), body, sig):
            return "manifest signature does not match the device key: refused"
        files = check_manifest(json.loads(body), v, cfg["device"])
        body = None
        folder = self.root + "/" + v
        self.buf = self.buf or bytearray(_CHUNK)
        try:
            os.mkdir(self.root)
        except OSError:
            pass
        p = self.pointer
        self.cleanup((p[1], p[2], v))  # what runs, what it would go back to, and this one: the rest is of no use
        need, free0, keeps = self._room(files, folder)
        self.log("OTA %s: %d files, %d bytes, %d flash blocks to stage (%d free, the reading log keeps %d)" % (
            v, len(files), sum([f[1] for f in files]), need, free0, keeps))
        for path, size, sha in files:
            target = folder + "/" + path
            if file_sha(target, self.buf) == sha:
                continue  # staged before a reset or power cut
            d = self.root
            for part in [v] + path.split("/")[:-1]:
                d += "/" + part
                if not _is_dir(d):
                    os.mkdir(d)
            h = hashlib.sha256()
            with open(target, "wb") as f:
                off = 0
                while off < size:
                    n = size - off if size - off < _CHUNK else _CHUNK
                    code, _, data = await self._get("/v1/firmware/%s/file?path=%s&offset=%d&length=%d" % (
                        v, path, off, n), _CHUNK)
                    if code != 200 or len(data) != n:
                        return "%s at %d: http %d, %d bytes" % (path, off, code, len(data))
                    h.update(data)
                    f.write(data)
                    off += n
                    data = None
            if hexlify(h.digest()).decode() != sha:
                os.remove(target)
                return "%s: SHA-256 does not match the manifest: refused" % path
            gc.collect()
        for path, size, sha in files:  # read back: what the flash holds is what boots
            if file_sha(folder + "/" + path, self.buf) != sha:
                return "%s: staged copy does not read back: refused" % path
        st = os.statvfs(self.root)
        self.log("OTA %s: staged in %d flash blocks of %d bytes" % (v, free0 - st[3], st[0]))
        return None

    def switch(self, o):
        """The single rename that makes the next boot run the staged version on probation."""
        try:
            os.remove(self.root + "/why")
        except OSError:
            pass
        self.pointer = ["try", o["version"], self.pointer[1], "", "", str(o["probation_s"])]
        write_pointer(self.pointer, self.root)
        self.log("OTA %s staged: switching" % o["version"])
        self._reset()

    async def run(self):
        if self.state == "probation":
            await self.probation()
        wait = _RETRY_MS
        while True:
            o = self.offered
            if o is None:
                await asyncio.sleep_ms(1000)
                continue
            self.state, self.target, self.error = "downloading", o["version"], ""
            try:
                why = await self.stage(o)
            except (OSError, ValueError, KeyError, TypeError, IndexError, asyncio.TimeoutError) as e:
                why = "%s %s" % (type(e).__name__, e)
            if why is None:
                self.state = "staged"
                sent = self.board.uplink.sent
                for _ in range(60):  # let one upload tell the agent, then switch
                    if self.board.uplink.sent != sent:
                        break
                    await asyncio.sleep_ms(500)
                self.switch(o)
                return
            self.state, self.error = "failed", _clean(why)
            self.offered = None  # the next answer offers it again, unless the agent halted the rollout
            self.log("OTA %s failed: %s: retrying in %d s" % (o["version"], why, wait // 1000))
            await asyncio.sleep_ms(wait)
            wait = wait * 2 if wait < _RETRY_CAP_MS else _RETRY_CAP_MS
