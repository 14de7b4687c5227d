# Board-life scenarios on the MicroPython VM with the emulated ESP32 modules (emulator/board) on the path.
# Run by tests/firmware/test_board.py:
#   micropython board_life.py boot CONFIG MS       -> board.start(config) and its loops for MS ms
#   micropython board_life.py wifi                 -> Wi-Fi backoff and reconnect against the emulated AP
#   micropython board_life.py watchdog             -> feeds only while both loops make progress
import asyncio
import sys

import board
import config


async def _for(aw, ms):
    try:
        await asyncio.wait_for_ms(aw, ms)
    except asyncio.TimeoutError:
        pass


def boot(path, ms):
    cfg = config.load(path)
    b = board.start(cfg)
    asyncio.run(_for(b.run(), ms))
    board.flush(b.store)  # the run ends as a deliberate stop does (board.main on Ctrl-C)
    import machine
    print("RTC year %d" % machine.RTC().datetime()[0])
    print("END uplink %s sent %d depth %d sync %s errors %s" % (b.uplink.last, b.uplink.sent, b.store.depth,
                                                               b.clock.sync, b.sampler.errors))


async def _until(cond, ms):
    # Wait for a condition with a generous deadline: the assertions do not depend on how fast the VM runs.
    waited = 0
    while not cond():
        assert waited < ms, "condition not met within %d ms" % ms
        await asyncio.sleep_ms(20)
        waited += 20


def wifi():
    import boardstate
    import wifi as wifi_
    wifi_.WAIT_MS = 1500
    wifi_.BASE_MS = 200
    wifi_.CAP_MS = 800
    w = wifi_.Wifi("wrong-ssid", "secret")

    async def go():
        task = asyncio.create_task(w.run())
        await _until(lambda: w.failures >= 4, 20000)
        assert not w.isconnected() and w.rssi() is None
        w.ssid = "cityhall-iot"  # the technician fixes the config: a later attempt connects
        await _until(lambda: w.up, 20000)
        assert w.isconnected() and w.failures == 0
        r = w.rssi()
        assert -127 <= r <= 0, r
        boardstate.set_faults({"wifi_down": True})
        await _until(lambda: not w.up, 20000)
        await _until(lambda: w.failures >= 1, 20000)
        boardstate.set_faults({})
        await _until(lambda: w.up, 20000)
        assert w.isconnected()
        task.cancel()

    asyncio.run(go())
    print("WIFI-OK")


class _Loop:
    def __init__(self, clock):
        self.clock = clock
        self.progress = clock.ms()


class _CountingWDT:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def watchdog():
    from clock import Clock
    board._WDT_TICK_MS = 20
    clock = Clock()
    a, b = _Loop(clock), _Loop(clock)
    wdt = _CountingWDT()

    async def alive(loop, until_ms):
        while clock.ms() < until_ms:
            loop.progress = clock.ms()
            await asyncio.sleep_ms(10)

    async def go():
        task = asyncio.create_task(board.watchdog(wdt, (("sampler", a), ("uplink", b)), clock, 200))
        t0 = clock.ms()
        await asyncio.gather(alive(a, t0 + 500), alive(b, t0 + 500))
        fed_alive = wdt.feeds
        assert fed_alive >= 10, fed_alive
        # the uplink keeps going, the sampler hangs: feeding stops once it is 200 ms late
        await alive(b, clock.ms() + 800)
        stopped = wdt.feeds
        assert stopped - fed_alive <= 15, (fed_alive, stopped)
        await alive(b, clock.ms() + 400)
        assert wdt.feeds == stopped, "fed while the sampler loop made no progress"
        a.progress = clock.ms()  # it recovers before the WDT fired: feeding resumes
        await alive(b, clock.ms() + 200)
        assert wdt.feeds > stopped
        task.cancel()

    asyncio.run(go())
    print("WATCHDOG-OK")


if sys.argv[1] == "boot":
    boot(sys.argv[2], int(sys.argv[3]))
elif sys.argv[1] == "wifi":
    wifi()
elif sys.argv[1] == "watchdog":
    watchdog()
