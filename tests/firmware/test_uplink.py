"""The firmware's HTTP client (uplink.py) on the MicroPython VM, against a scripted HTTP server on 127.0.0.1.

The server is a CPython asyncio server in this process (its own thread); each connection takes the next scripted
behaviour: answer, fail (500), stall (never answers), drop the connection, 429 with Retry-After, 400, 401, 413.
Every request it receives is checked the way the agent checks it: signature and protocol batch.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
from micropython_plugin import run_micropython

from airwatt.protocol import check, v2, wire

HERE = Path(__file__).resolve().parent
KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")


def answer(stored: str | int = "last", server_time: int = 1790000123, **extra):
    """A 200 whose stored_seq is the batch's last seq ("last"), or a fixed number."""
    return ("answer", 200, {}, stored, server_time, extra)


class Server:
    """HTTP/1.1 on 127.0.0.1, one scripted behaviour per connection (the last one repeats)."""

    def __init__(self, plan):
        self.plan = list(plan)
        self.requests = []  # (monotonic time, headers dict, body bytes, behaviour)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def close(self):
        async def shut():
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            await asyncio.sleep(0.01)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    async def _conn(self, reader, writer):
        what = self.plan.pop(0) if len(self.plan) > 1 else self.plan[0]
        try:
            if what[0] == "drop":
                return
            line = await reader.readline()
            headers = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b""):
                    break
                k, v = h.decode().split(":", 1)
                headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers["content-length"]))
            assert line.startswith(b"POST /v1/batches HTTP/1.1"), line
            self.requests.append((time.monotonic(), headers, body, what[0]))
            if what[0] == "stall":
                await asyncio.sleep(30)
                return
            if what[0] == "drop_after_request":
                return
            if what[0] == "raw":  # a 200 with these exact answer bytes
                what = ("answer", 200, {}, None, None, what[1])
            _, code, extra_headers, stored, server_time, extra = what
            if isinstance(extra, bytes):
                payload = extra
            elif code == 200:
                sent = json.loads(body)
                if stored == "last":
                    stored = sent["first_seq"] + sent["n"] - 1 if sent["v"] == 2 else sent["readings"][-1]["seq"]
                payload = json.dumps({"v": sent["v"], "stored_seq": stored, "server_time": server_time,
                                      **extra}).encode()
            else:
                payload = json.dumps({"error": "scripted %d" % code, "path": "readings[0].values.pm25"}).encode()
            head = "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (code, len(payload))
            for k, v in extra_headers.items():
                head += "%s: %s\r\n" % (k, v)
            writer.write(head.encode() + b"\r\n" + payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def batches(self):
        """Every received body, checked as the agent would: signature, then the protocol batch."""
        out = []
        for _, headers, body, _ in self.requests:
            assert headers["x-airwatt-device"] == "kk-test-01"
            assert wire.verify(KEY, body, headers["x-airwatt-signature"]), "bad signature"
            assert headers["content-type"] == "application/json"
            batch = json.loads(body)
            readings = check.check_batch(batch)
            if batch["v"] == 2:  # seen as v1 by the tests: the readings decoded
                assert v2.canonical_batch_v2(batch, readings) == body, "the board sends canonical bytes"
                batch = dict(batch, readings=readings)
            else:
                assert wire.canonical_batch(batch) == body, "the board sends canonical bytes"
            out.append(batch)
        return out


@pytest.fixture
def serve():
    servers = []

    def start(*plan):
        s = Server(plan)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def board(server: Server, readings: int, mode: str, n: int) -> list[dict]:
    result = run_micropython([str(HERE / "board_uplink.py"), str(server.port), str(readings), mode, str(n)],
                             extra_paths=(HERE,), timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 0, "MicroPython says:\n" + out
    return [json.loads(line[7:]) for line in result.stdout.splitlines() if line.startswith("RESULT ")]


def seqs(batch):
    return [r["seq"] for r in batch["readings"]]


def test_200_acks_oldest_first_in_batches_and_sets_the_clock(serve):
    server = serve(answer())
    results = board(server, 10, "once", 4)
    assert [r["outcome"] for r in results] == ["ok 4", "ok 4", "ok 2", "empty"]
    assert results[-1]["acks"] == [4, 8, 10] and results[-1]["depth"] == 0
    assert [seqs(b) for b in server.batches()] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert results[0]["sync"] == "agent" and results[0]["wall"] >= 1790000123
    assert results[0]["wait"] == 0 and results[2]["wait"] == 30000, "more pending: go on at once; else wait"
    status = server.batches()[0]["status"]
    assert status["errors"] == {"pm": 1} and status["buffer_depth"] == 10


def test_500_timeout_and_dropped_connections_keep_everything_and_back_off(serve):
    server = serve(("answer", 500, {}, 0, 0, {}), ("stall",), ("drop",), ("drop_after_request",), answer())
    results = board(server, 3, "once", 5)
    outcomes = [r["outcome"] for r in results]
    assert outcomes[0] == "http 500" and outcomes[1] == "timeout", outcomes
    assert outcomes[2].startswith("error") and outcomes[3].startswith("error"), outcomes
    assert outcomes[4] == "ok 3"
    assert [r["acks"] for r in results[:4]] == [[], [], [], []], "nothing acked before the 200"
    assert [r["depth"] for r in results[:4]] == [3, 3, 3, 3]
    # exponential backoff with jitter: the k-th failure waits between half and all of 2 s * 2**(k-1)
    for k, r in enumerate(results[:4], 1):
        full = 2000 * 2 ** (k - 1)
        assert full // 2 <= r["wait"] <= full, (k, r["wait"])
        assert r["failures"] == k
    assert results[4]["failures"] == 0 and results[4]["acks"] == [3]
    # every attempt that reached the server carried the same oldest readings
    assert [seqs(b) for b in server.batches()] == [[1, 2, 3]] * 4


def test_an_upload_out_of_heap_backs_off_and_keeps_everything(serve):
    """A heap too fragmented for one attempt is a failed attempt, not a crash (which would reset the board)."""
    server = serve(answer())
    results = board(server, 3, "nomem", 2)
    assert results[0]["outcome"] == "error memory allocation failed, allocating 424 bytes"
    assert results[0]["failures"] == 1 and 1000 <= results[0]["wait"] <= 2000 and results[0]["acks"] == []
    assert results[1]["outcome"] == "ok 3" and results[1]["acks"] == [3]
    assert [seqs(b) for b in server.batches()] == [[1, 2, 3]]


def test_429_retry_after_is_honoured_by_the_loop(serve):
    server = serve(("answer", 429, {"Retry-After": "1"}, 0, 0, {}), answer())
    results = board(server, 2, "loop", 2500)
    assert results[-1]["acks"] == [2] and results[-1]["depth"] == 0
    times = [t for t, *_ in server.requests]
    assert len(times) == 2
    assert times[1] - times[0] >= 0.95, "the retry came %.3f s after the 429" % (times[1] - times[0])


def test_503_retry_after_sets_the_wait_and_a_date_falls_back_to_backoff(serve):
    server = serve(("answer", 503, {"Retry-After": "7"}, 0, 0, {}),
                   ("answer", 503, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 0, 0, {}))
    results = board(server, 1, "once", 2)
    assert [(r["outcome"], r["wait"]) for r in results][0] == ("busy 503", 7000)
    assert results[1]["outcome"] == "busy 503" and 2000 <= results[1]["wait"] <= 4000
    assert results[1]["acks"] == []


def test_400_keeps_the_readings_and_401_backs_off_long(serve):
    server = serve(("answer", 400, {}, 0, 0, {}), ("answer", 401, {}, 0, 0, {}), answer())
    result = run_micropython([str(HERE / "board_uplink.py"), str(server.port), "5", "once", "3"],
                             extra_paths=(HERE,), timeout=60)
    results = [json.loads(line[7:]) for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert [r["outcome"] for r in results] == ["rejected 400", "unauthorized 401", "ok 4"], result.stdout
    assert results[0]["depth"] == 5 and results[0]["acks"] == [] and results[1]["acks"] == []
    assert 15000 <= results[0]["wait"] <= 30000
    assert 300000 <= results[1]["wait"] <= 600000
    assert "UPLINK 400: the agent refused seq 1..4, kept for later" in result.stdout
    assert "UPLINK 401: the agent does not accept device kk-test-01" in result.stdout
    assert [seqs(b) for b in server.batches()] == [[1, 2, 3, 4]] * 3


def test_stored_seq_is_capped_to_the_batch_and_bad_answers_ack_nothing(serve):
    server = serve(("answer", 200, {}, "{not json", 0, {}),  # replaced below
                   answer(server_time=5),  # fails check_answer: server_time before 2020
                   answer(stored=0),  # below the batch: nothing acked
                   answer(stored=999, settings={"batch_max": 2}),  # capped to the batch's last seq (4)
                   answer(stored=5))
    server.plan[0] = answer(stored="last", server_time=1790000123, extra_field=1)  # unknown field: check fails
    results = board(server, 6, "once", 5)
    outcomes = [r["outcome"] for r in results]
    assert outcomes[0].startswith("bad answer") and outcomes[1].startswith("bad answer"), outcomes
    assert outcomes[2].startswith("bad answer") and "below this batch" in outcomes[2], outcomes
    assert [r["acks"] for r in results[:3]] == [[], [], []]
    assert results[1]["sync"] == "none", "a bad answer does not set the clock"
    assert outcomes[3] == "ok 4" and results[3]["acks"] == [4] and results[3]["batch_max"] == 2
    assert outcomes[4] == "ok 1" and results[4]["acks"] == [4, 5], "capped to the batch of 2: seq 5..6, stored 5"


def test_413_halves_the_batch(serve):
    server = serve(("answer", 413, {}, 0, 0, {}), answer())
    results = board(server, 6, "once", 2)
    assert results[0]["outcome"] == "too large 413" and results[0]["batch_max"] == 2
    assert results[1]["acks"] == [2]
    assert [seqs(b) for b in server.batches()] == [[1, 2, 3, 4], [1, 2]]


def test_answers_that_are_not_utf8_json_or_nest_too_deep_ack_nothing(serve):
    good = b'{"server_time":1790000123,"stored_seq":4,"v":1}'
    server = serve(("raw", b"\xef\xbb\xbf" + good),  # UTF-8 byte order mark
                   ("raw", good.decode().encode("utf-16")),
                   ("raw", b"[" * 2000 + b"]" * 2000),  # 4000 bytes: fits the board's answer limit
                   answer())
    results = board(server, 4, "once", 4)
    outcomes = [r["outcome"] for r in results]
    assert "byte order mark" in outcomes[0] and "UTF-16" in outcomes[1] and "deeper than" in outcomes[2], outcomes
    assert [r["acks"] for r in results[:3]] == [[], [], []]
    assert outcomes[3] == "ok 4" and results[3]["acks"] == [4]
    assert [seqs(b) for b in server.batches()] == [[1, 2, 3, 4]] * 4
