# The board's clock: uptime that survives the ticks_ms wrap, wall time once it is known right (from the agent's
# answers, NTP, or an RTC that kept it across a reset; rtc.py reads and sets those), and the boot id.
import sys
import time

from protocol.fields import MAX_WALL_TIME, MIN_WALL_TIME  # names: board.py frees the field table


class Clock:
    """Uptime in ms since boot (extended across the ticks_ms wrap) and wall time once it is known valid."""

    def __init__(self, ticks_ms=time.ticks_ms):
        self._ticks = ticks_ms
        self._last = ticks_ms()
        self._ms = 0
        self._wall_ms = None  # Unix ms at uptime 0, once known
        self.sync = "none"  # protocol time_sync: none | agent | ntp

    def ms(self):
        # ticks_diff is exact as long as this runs at least once per half wrap period (~6 days on the ESP32).
        now = self._ticks()
        self._ms += time.ticks_diff(now, self._last)
        self._last = now
        return self._ms

    def wall(self):
        """Unix seconds (int), or None while the clock is not known to be right."""
        if self._wall_ms is None:
            return None
        return (self._wall_ms + self.ms()) // 1000

    def set_wall(self, t, sync):
        """Take wall time t (Unix s) from NTP or the agent (sync: 'ntp' | 'agent'), or from an RTC that kept it
        ('none'); False when t cannot be right."""
        if not MIN_WALL_TIME <= t <= MAX_WALL_TIME:
            return False
        self._wall_ms = t * 1000 - self.ms()
        self.sync = sync
        return True

    def from_agent(self, t):
        """The agent's server_time: taken (and the RTC set) while the clock has no time yet; True when taken."""
        if self.wall() is None and self.set_wall(t, "agent"):
            import rtc  # once a boot: the RTC's date maths need not stay in the heap
            rtc.set_rtc(t)
            del sys.modules["rtc"]
            return True
        return False


def boot_id():
    """8 hex chars, random per boot: tells this boot's ticks from another boot's."""
    import os
    from binascii import hexlify
    return hexlify(os.urandom(4)).decode()
