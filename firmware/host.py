# CPython stand-ins for the MicroPython names the sensor drivers use (micropython.const, asyncio.sleep_ms,
# time.ticks_ms and ticks_diff), so that the drivers and their tests run on the host too. A board never loads it.
import asyncio
import time


def const(x):
    return x


async def sleep_ms(ms):
    await asyncio.sleep(ms / 1000)


def ticks_ms():
    return int(time.monotonic() * 1000)


def ticks_diff(a, b):
    return a - b
