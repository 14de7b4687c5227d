# Settings from the agent (the upload answer's `settings`, protocol/check.check_settings): sampling intervals,
# upload period, batch size, the PM humid threshold and SCD4x care. Applied to the running board, kept in
# /settings.json (beside config.json, over which they apply at every boot) and acknowledged in the status
# (status.settings: the rev applied, the FRC correction, what failed). A rev is applied once: a repeated answer
# (the agent sends the settings until it sees the acknowledgement) does not recalibrate the sensor again.
import asyncio
import json
import os

try:
    _sleep_ms = asyncio.sleep_ms
except AttributeError:  # CPython (tests)
    async def _sleep_ms(ms):
        await asyncio.sleep(ms / 1000)

PATH = "/settings.json"
_KEEP = ("rev", "intervals", "upload_s", "batch_max", "humid_rh", "co2")


def load(path=PATH):
    """The kept settings ({} when none, or when the file is unreadable: the config's values then hold)."""
    try:
        with open(path) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def save(kept, path=PATH):
    # Write then rename: a power cut leaves the old file or the new one, never half of one.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(kept, f)
    os.rename(tmp, path)


class Settings:
    """The board's settings from the agent. The board hands each answer's settings to `take`; `run` is a board task."""

    def __init__(self, board, path=PATH, log=print):
        self.board = board
        self.path = path
        self.log = log
        self.kept = load(path)
        self.device = board.cfg["device"]
        if self.kept.get("device") != self.device:
            self.kept = {}  # another device's (the board was flashed as a new one): its revs mean nothing here
        self.applied = self.kept.get("applied")  # {"rev", "frc", "error"}: sent in every status
        self.humid_rh = 0
        self._care = None  # (rev, care, frc) waiting for the care task
        self.co2 = self.pm = None
        for s in board.sampler.sensors:
            if s.kind == "co2":
                self.co2 = s.driver
            elif s.kind == "pm":
                self.pm = s.driver
        if self.pm is not None and hasattr(self.pm, "humid"):
            self.pm.humid = self._humid
        self._use(self.kept)
        self._boot_care = self.kept.get("co2")  # applied again by run(): the sensor may have lost it
        if self.kept.get("rev"):
            self.log("SETTINGS rev %d kept from %s" % (self.kept["rev"], path))

    def _humid(self):
        co2 = self.co2
        return co2 is not None and hasattr(co2, "humid_above") and co2.humid_above(self.humid_rh)

    def _use(self, s):
        b = self.board
        iv = s.get("intervals") or {}
        for kind in iv:
            b.sampler.set_interval(kind, iv[kind])
        if "batch_max" in s:
            b.uplink.batch_max = s["batch_max"]
        if "upload_s" in s:
            b.uplink.upload_ms = s["upload_s"] * 1000
        if "humid_rh" in s:
            self.humid_rh = s["humid_rh"]

    def take(self, s):
        """A checked answer's settings: apply a rev not applied yet."""
        rev = s.get("rev")
        if not rev or (self.applied and self.applied["rev"] == rev) or (self._care and self._care[0] == rev):
            return
        self._use(s)
        kept = {}
        for k in _KEEP:
            if k in s:
                kept[k] = s[k]
        care = dict(s.get("co2") or {})
        frc = care.pop("frc", None)
        if care:
            kept["co2"] = care
        elif "co2" in kept:
            del kept["co2"]
        kept["device"] = self.device
        self.kept = kept
        self.log("SETTINGS rev %d from the agent: %s" % (rev, json.dumps(s)))
        if care or frc is not None:
            self._care = (rev, care, frc)  # the care task applies it, then acknowledges
        else:
            self._done(rev, None, "")

    def _done(self, rev, frc, error):
        error = "".join([ch if " " <= ch <= "~" and ch not in "\"\\" else "?" for ch in error])
        self.applied = {"rev": rev, "frc": frc, "error": error}
        self.kept["applied"] = self.applied
        try:
            save(self.kept, self.path)
        except OSError as e:  # applied now, lost at the next boot: say so
            self.log("SETTINGS cannot keep rev %d in %s: %s" % (rev, self.path, e))
        self.log("SETTINGS rev %d applied%s%s" % (rev, "" if frc is None else " frc %+d ppm" % frc,
                                                  ": " + error if error else ""))

    async def _apply_care(self, care, frc):
        """(FRC correction or None, error text)."""
        if self.co2 is None or not hasattr(self.co2, "care"):
            return None, "no co2 sensor on this board"
        try:
            return await self.co2.care(care, frc), ""
        except ValueError as e:
            return None, str(e)[:80]
        except OSError as e:
            return None, ("co2 sensor: %s" % e)[:80]

    async def run(self):
        """Re-apply the kept SCD4x care at boot (only what the sensor lost is written), then apply new care."""
        care = self._boot_care
        if care:
            await _sleep_ms(1000)  # after the sampler's start of the sensor
            _, error = await self._apply_care(care, None)
            self.log("SETTINGS co2 care re-applied at boot%s" % (": " + error if error else ""))
        while True:
            if self._care is not None:
                rev, care, frc = self._care
                corr, error = await self._apply_care(care, frc)
                if self._care is not None and self._care[0] == rev:
                    self._care = None
                self._done(rev, corr, error)
            await _sleep_ms(500)
