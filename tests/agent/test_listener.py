"""The agent's listener under abuse: a real `airwatt serve` process at RLIMIT_NOFILE 1024 on 127.0.0.1, flooded
with idle connections, slow headers, slow bodies and malformed requests. It keeps serving, closes what idles,
and logs one line per bad request."""

from __future__ import annotations

import resource
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from airwatt.agent import store
from airwatt.agent.bench import serve
from airwatt.protocol import wire

from agent_helpers import body

FILES = 1024
FLOOD = 1100


def _limit_files() -> None:  # runs in the agent's process before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, FILES))


@pytest.fixture
def start(tmp_path: Path):
    procs = []

    def run(idle_s: float, body_s: float, limited: bool = True) -> tuple[str, bytes, Path]:
        data_dir = tmp_path / ("data%d" % len(procs))
        db = store.open_db(data_dir)
        key = bytes.fromhex(store.add_device(db, "dev-1"))
        db.close()
        (data_dir / "airwatt.toml").write_text("idle_timeout_s = %s\nbody_timeout_s = %s\n" % (idle_s, body_s))
        proc, url = serve.start_agent(data_dir, preexec_fn=_limit_files if limited else None)
        procs.append(proc)
        (data_dir / "agent.pid").write_text(str(proc.pid))
        return url, key, data_dir / "serve.log"

    yield run
    for proc in procs:
        serve.stop_agent(proc)


@pytest.fixture
def room_for_sockets():
    """This test process holds the flood's sockets: its own soft limit must allow them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = FLOOD + 300
    if soft != resource.RLIM_INFINITY and soft < need:
        assert hard == resource.RLIM_INFINITY or hard >= need, "the hard open-files limit %d is below %d" % (hard, need)
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _get(url: str, timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        resp.read()
        return resp.status, time.monotonic() - t0


def _upload(url: str, key: bytes, seqs: range, timeout: float) -> int:
    data = body("dev-1", seqs)
    req = urllib.request.Request(url + "/v1/batches", data=data, method="POST", headers={
        "Content-Type": "application/json", "X-AirWatt-Device": "dev-1", "X-AirWatt-Signature": wire.sign(key, data)})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (BlockingIOError, socket.timeout):
        return False


def test_an_idle_flood_above_the_file_limit_locks_nobody_out_and_times_out(start, room_for_sockets):
    idle_s = 12.0
    url, key, log = start(idle_s, 5.0)
    port = int(url.rsplit(":", 1)[1])
    flood: list[socket.socket] = []
    try:
        t0 = time.monotonic()
        for _ in range(FLOOD):  # connect and say nothing: each holds one of the agent's descriptors
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        flooded = time.monotonic()
        status, took = _get(url + "/healthz", timeout=5)
        assert status == 200 and took < 3, took
        assert _upload(url, key, range(1, 4), timeout=5) == 200
        assert _get(url + "/fleet", timeout=5)[0] == 200
        assert time.monotonic() - t0 < idle_s, "too slow to show that the cap, not the idle timeout, let us in"
        # Every flood connection is closed by the agent: pushed out by newer ones, or idle beyond idle_s.
        time.sleep(max(0.0, flooded + idle_s + 3 - time.monotonic()))
        for s in flood:
            s.setblocking(False)
        still_open = sum(not _closed_by_peer(s) for s in flood)
        assert still_open == 0, "%d of %d idle connections are still open after %s s" % (still_open, FLOOD, idle_s)
    finally:
        for s in flood:
            s.close()
    assert _get(url + "/healthz", timeout=5)[0] == 200
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and len(text) < 10_000, text[-3000:]


def test_a_file_limit_lowered_under_a_running_agent_makes_it_shed_connections_not_lock_up(start, room_for_sockets):
    """The cap is taken from RLIMIT_NOFILE at start; lowered later (prlimit), accept() runs out of descriptors:
    the agent closes its quietest connections and lowers its cap instead of refusing everyone."""
    url, key, log = start(30.0, 5.0, limited=False)  # idle connections alone would hold on for 30 s
    proc_pid = int(log.with_name("agent.pid").read_text())
    resource.prlimit(proc_pid, resource.RLIMIT_NOFILE, (FILES, FILES))
    port = int(url.rsplit(":", 1)[1])
    flood = []
    try:
        for _ in range(FLOOD):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        status, took = _get(url + "/healthz", timeout=10)
        assert status == 200 and took < 5, took
        assert _upload(url, key, range(1, 4), timeout=10) == 200
    finally:
        for s in flood:
            s.close()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and text.count("accept() failed") <= 2 and len(text) < 10_000, text[-3000:]


def test_slow_headers_and_slow_bodies_are_cut_off_and_bad_requests_are_one_line_each(start):
    url, key, log = start(1.5, 1.5)
    port = int(url.rsplit(":", 1)[1])
    # Headers one byte at a time, forever: closed once idle_timeout_s has passed since connecting.
    slow = socket.create_connection(("127.0.0.1", port), timeout=5)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    closed_after = None
    while time.monotonic() - t0 < 8:
        try:
            slow.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - t0
            break
        slow.settimeout(0.3)
        try:
            if slow.recv(1024) == b"":
                closed_after = time.monotonic() - t0
                break
        except socket.timeout:
            pass
    slow.close()
    assert closed_after is not None and closed_after < 4, closed_after
    # A body that never completes: 408 once body_timeout_s has passed, and nothing stored.
    data = body("dev-1", range(1, 4))
    s = socket.create_connection(("127.0.0.1", port), timeout=6)
    s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-AirWatt-Device: dev-1\r\n"
              b"X-AirWatt-Signature: %s\r\nContent-Length: %d\r\n\r\n" % (wire.sign(key, data).encode(), len(data))
              + data[:100])
    t0 = time.monotonic()
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 4, answer
    # Malformed requests: a 400 each, and one log line each.
    before = len(log.read_text().splitlines())
    bad = (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
           b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
           b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
           b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n")
    for raw in bad * 4:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(raw)
        assert s.recv(64).startswith(b"HTTP/1.0 400"), raw
        s.close()
    assert _upload(url, key, range(1, 4), timeout=5) == 200  # still serving
    time.sleep(0.3)
    lines = log.read_text().splitlines()[before:]
    assert len(lines) <= len(bad) * 4 and not any("Traceback" in x for x in lines), "\n".join(lines)
    assert any("bad request (400)" in x and "Invalid header token" in x for x in lines), "\n".join(lines)
