# Sampler: reads each configured sensor on its own schedule and adds every good reading to the flash log.
# A sensor that is missing or fails only raises its own error counter; the others keep going. A bad frame is
# counted, never stored. One-shot mode (the self-test): each sensor until its first outcome, nothing stored.
# Small in RAM: the board's heap also holds the code (const() names cost nothing at run time).
import asyncio
from micropython import const

from protocol.packed import KINDS, SENSORS  # the field table's metrics (board.py frees the table itself)

_POLL_MS = const(1000)  # retry delay after a read that has no value yet (PMS warm-up, SCD4x data not ready)
_READ_TIMEOUT_MS = const(10000)  # drivers time out on their own; this catches one that never returns
_MAX_NAP_MS = const(1000)  # the loop wakes at least this often, so the watchdog sees it alive
_NO_DATA_MS = const(30000)  # "no value yet" for longer than warm-up plus this is a failure and restarts it


class Sensor:
    """One configured sensor: its driver, schedule, error count and run of identical values."""

    def __init__(self, kind, driver, interval_ms, stuck_n, warmup_ms=0, instance=0, label=None):
        self.kind = kind
        self.instance = instance  # v2: which sensor of its kind (a meter's Modbus address); 0: the only one
        self.label = label or kind  # what the console and the self-test call it (e.g. "energy:L2")
        self.driver = driver  # None when it could not even be built (missing module, bad bus)
        self.interval_ms = 0
        self.set_interval(interval_ms)
        self.stuck_n = stuck_n
        self.warmup_ms = warmup_ms
        self.due = 0  # uptime ms of the next attempt
        self.slot = 0  # uptime ms of the scheduled reading the next attempt belongs to
        self.started = False
        self.waiting = None  # uptime ms when the driver first said "no value yet" for this slot
        self.last = None  # fingerprint of the previous reading's values
        self.same = 0  # how many readings in a row had exactly these values
        self.last_error = None
        self.outcome = None  # first outcome this boot, for the self-test line: (True, values) | (False, why)

    def set_interval(self, ms):
        # Every driver is told how often it is read (period_ms): one with a warm-up may rest between readings
        # (the PMS5003 sleeps its fan and laser), and is then asked its warm-up early (Sampler.step).
        self.interval_ms = ms
        if self.driver is not None:
            self.driver.period_ms = ms


class Sampler:
    def __init__(self, sensors, store, clock, boot, log=print, once=False):
        self.sensors = sensors
        self.store = store  # clog.Log, or None with once
        self.once = once  # each sensor until its first outcome (Sensor.outcome), then never again
        self.clock = clock
        self.boot = boot
        self.log = log
        self.errors = {}  # per sensor kind: OSError/ValueError/timeouts, as in the status' errors
        self.store_errors = 0
        self.progress = clock.ms()
        for s in sensors:
            self.errors[s.kind] = 0

    def set_interval(self, kind, interval_s):
        """The agent's settings.intervals: takes effect from the next reading."""
        for s in self.sensors:
            if s.kind == kind and s.interval_ms != interval_s * 1000:
                s.set_interval(interval_s * 1000)
                s.due = s.slot = self.clock.ms()

    def _fail(self, s, why):
        s.waiting = None
        self.errors[s.kind] += 1
        s.last_error = why
        if s.outcome is None:
            s.outcome = (False, why)

    def _record(self, s, values, flags):
        # Stuck: compare a fingerprint of all the driver's values, not a copy (no long-lived allocation per
        # reading to fragment a small heap). Only the protocol's metrics of this kind go into the reading; the
        # rest (e.g. particle counts) only help to see whether the sensor is stuck.
        fp = 0
        for k in values:
            fp += (hash(k) ^ (hash(values[k]) * 3)) & 0xFFFFFF
        if fp == s.last:
            s.same += 1
        else:
            s.last = fp
            s.same = 1
        if s.same >= s.stuck_n and "stuck" not in flags:
            flags.append("stuck")
        kept = {}
        for row in KINDS[SENSORS.index(s.kind)] if s.kind in SENSORS else ():
            if row[0] in values:
                kept[row[0]] = values[row[0]]
        if self.store is not None:
            try:
                self.store.add(self.store.next_seq, self.boot, self.clock.wall(), self.clock.ms(), s.kind, kept,
                               flags, s.instance)
            except Exception as e:  # flash trouble is not the sensor's fault: count it apart and say so
                self.store_errors += 1
                self.log("STORE append failed: %r" % (e,))
                return
        if s.outcome is None:
            s.outcome = (True, kept)

    async def _attempt(self, s):
        """One read of one sensor; returns True when it has no value yet and wants to be asked again soon."""
        d = s.driver
        if d is None:
            self._fail(s, "no driver")
            return False
        try:
            if not s.started:
                await asyncio.wait_for_ms(d.start(), _READ_TIMEOUT_MS)
                s.started = True
            got = await asyncio.wait_for_ms(d.read(), _READ_TIMEOUT_MS)
        except asyncio.TimeoutError:
            self._fail(s, "timeout")
            s.started = False
            return False
        except OSError as e:
            self._fail(s, "%s %s" % ("OSError", e.args[0] if e.args else ""))
            s.started = False  # re-initialise after no answer: the sensor may have lost power
            return False
        except ValueError as e:
            self._fail(s, "%s %s" % ("ValueError", e.args[0] if e.args else ""))
            return False
        except Exception as e:  # a driver bug must not stop the other sensors
            self._fail(s, "%s %s" % (type(e).__name__, e))
            return False
        if got is None:
            now = self.clock.ms()
            if s.waiting is None:
                s.waiting = now
            elif now - s.waiting > s.warmup_ms + _NO_DATA_MS:
                s.waiting = None
                s.started = False
                self._fail(s, "no data")
                return False
            return True
        s.waiting = None
        values, flags = got
        try:
            self._record(s, values, list(flags))
        except ValueError as e:  # the driver gave a metric the protocol does not know: a bug, counted
            self._fail(s, "%s %s" % ("ValueError", e.args[0] if e.args else ""))
            return False
        return False

    async def step(self):
        """Read every sensor that is due; returns ms until the next one is due (at most _MAX_NAP_MS)."""
        now = self.clock.ms()
        for s in self.sensors:
            if s.due > now or (self.once and s.outcome is not None):
                continue
            if await self._attempt(s):
                now = self.clock.ms()
                s.due = now + _POLL_MS
                continue
            now = self.clock.ms()
            slot = s.slot + s.interval_ms
            if slot <= now:  # fell behind (long outage of a slow sensor): no burst of catch-up reads
                slot = now + s.interval_ms
            s.slot = slot
            # A sensor that rests between readings (a warm-up, a long interval) is first asked its warm-up early:
            # the reading lands on its slot.
            if s.warmup_ms and s.interval_ms > 2 * s.warmup_ms + 2 * _POLL_MS:
                slot -= s.warmup_ms + _POLL_MS
            s.due = slot if slot > now else now
        self.progress = now
        if self.store is not None:
            try:
                self.store.tick(now)
            except Exception as e:
                self.store_errors += 1
                self.log("STORE commit failed: %r" % (e,))
        nap = _MAX_NAP_MS
        for s in self.sensors:
            if self.once and s.outcome is not None:
                continue
            wait = s.due - now
            if wait < nap:
                nap = wait
        return nap if nap > 0 else 0

    async def run(self):
        while True:
            nap = await self.step()
            await asyncio.sleep_ms(nap)
