# Uplink on the MicroPython VM against a test HTTP server on 127.0.0.1 (run by tests/firmware/test_uplink.py).
#   micropython board_uplink.py PORT READINGS once N     -> N upload_once() calls, one RESULT line each
#   micropython board_uplink.py PORT READINGS nomem N    -> the same, the first one out of heap
#   micropython board_uplink.py PORT READINGS loop MS    -> uplink.run() for MS ms, then one RESULT line
# Each RESULT line is JSON: outcome, wait_ms, store state, clock state.
import asyncio
import json
import socket
import sys

import uplink
from board import take_answer
from board_fakes import ListStore
from clock import Clock
from protocol import wire

KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def make(port, readings):
    cfg = {"host": "127.0.0.1", "port": port, "prefix": "", "device": "kk-test-01", "key": KEY, "batch_max": 4,
           "upload_s": 30, "http_timeout_s": 1, "protocol": 1}
    clock = Clock()
    store = ListStore()
    for i in range(readings):
        seq = store.next_seq
        # even: from an earlier boot (any ticks); odd: this boot, taken at once (ticks 0 <= sent_ticks)
        boot, ticks = ("ffff0000", 86400000 + i * 1000) if i % 2 == 0 else ("0a1b2c3d", 0)
        store.append(seq, wire.encode_reading(seq, None, ticks, boot, "pm", {"pm1": i, "pm25": 2, "pm10": 3}))
    status = lambda: wire.encode_status(12, 40000, -61, store.depth, store.dropped, {"pm": 1}, clock.sync)
    up = uplink.Uplink(cfg, store, clock, "0a1b2c3d", "0.2.0", log=lambda m: print("LOG " + m))
    up.timeout_ms = 400
    return up, store, clock, status


def report(outcome, wait, up, store, clock):
    print("RESULT " + json.dumps({"outcome": outcome, "wait": wait, "acks": store.acks, "depth": store.depth,
                                  "next": store.records[0][0] if store.records else None,
                                  "wall": clock.wall(), "sync": clock.sync, "failures": up.failures,
                                  "batch_max": up.batch_max}))


class NoHeapOnce:
    """uplink's socket module, whose first getaddrinfo finds no heap."""

    def __getattr__(self, name):
        return getattr(socket, name)

    def getaddrinfo(self, *args):
        uplink.socket = socket
        raise MemoryError("memory allocation failed, allocating 424 bytes")


async def main():
    port, readings, mode, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    up, store, clock, status = make(port, readings)
    if mode == "nomem":  # the first attempt finds no heap for its connection
        uplink.socket = NoHeapOnce()
        mode = "once"
    if mode == "once":
        for _ in range(n):
            outcome, wait, a = await up.upload_once(status())
            if a is not None:
                take_answer(a, clock, up)
            report(outcome, wait, up, store, clock)
    else:
        try:
            await asyncio.wait_for_ms(up.run(None, status, lambda a: take_answer(a, clock, up)), n)
        except asyncio.TimeoutError:
            pass
        report(up.last, None, up, store, clock)


asyncio.run(main())
