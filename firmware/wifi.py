# Wi-Fi station: connects, reconnects on loss with backoff, and sets the clock from NTP when configured.
import asyncio
import sys
from micropython import const

from uplink import backoff

WAIT_MS = 20000  # one connect attempt
BASE_MS = 5000  # backoff after a failed attempt: doubled per failure up to CAP_MS, jittered
CAP_MS = 300000
_NTP_EVERY_MS = const(3600000)


class Wifi:
    def __init__(self, ssid, password, log=print):
        import network
        self.log = log
        self.ssid = ssid
        self.password = password
        self.wlan = network.WLAN(network.STA_IF)
        self.failures = 0
        self.up = False

    def isconnected(self):
        try:
            return self.wlan.isconnected()
        except OSError:
            return False

    def rssi(self):
        """dBm, or None when not connected (protocol: -127..0 or null)."""
        if not self.isconnected():
            return None
        try:
            r = self.wlan.status("rssi")
        except Exception:
            try:
                r = self.wlan.config("rssi")
            except Exception:
                return None
        if not isinstance(r, int):
            return None
        return -127 if r < -127 else 0 if r > 0 else r

    async def connect_once(self):
        try:
            self.wlan.active(True)
            try:
                self.wlan.disconnect()  # an attempt still in progress would make connect() fail
            except OSError:
                pass
            self.wlan.connect(self.ssid, self.password)
        except OSError as e:
            self.log("WIFI connect error: %s" % (e,))
            return False
        import network
        refused = (getattr(network, "STAT_WRONG_PASSWORD", None), getattr(network, "STAT_NO_AP_FOUND", None),
                   getattr(network, "STAT_CONNECT_FAIL", None))
        waited = 0
        while waited < WAIT_MS:
            if self.isconnected():
                return True
            await asyncio.sleep_ms(250)
            waited += 250
            try:
                st = self.wlan.status()
            except OSError:
                continue
            if st is not None and st in refused:
                if st == refused[0]:
                    self.log("WIFI wrong password for %s: check wifi.password in config.json" % self.ssid)
                return False
        return False

    async def run(self, clock=None, ntp=""):
        """Keep the station connected: reconnect with exponential backoff and jitter; NTP when configured."""
        ntp_at = None
        while True:
            if self.isconnected():
                if not self.up:
                    self.up = True
                    self.failures = 0
                    self.log("WIFI up rssi %s" % (self.rssi(),))
                if ntp and clock is not None and clock.sync != "ntp" and (
                        ntp_at is None or clock.ms() - ntp_at > _NTP_EVERY_MS):
                    ntp_at = clock.ms()
                    import rtc  # NTP runs until it answers once: its code need not stay in the heap
                    ok = rtc.ntp_sync(clock, ntp)
                    rtc = None
                    del sys.modules["rtc"]
                    if ok:
                        self.log("CLOCK set from NTP %s" % ntp)
                await asyncio.sleep_ms(1000)
                continue
            if self.up:
                self.up = False
                self.log("WIFI lost")
            if await self.connect_once():
                continue
            self.failures += 1
            ms = backoff(BASE_MS, self.failures, CAP_MS)
            self.log("WIFI %s not reachable (attempt %d): next try in %d ms" % (self.ssid, self.failures, ms))
            await asyncio.sleep_ms(ms)
