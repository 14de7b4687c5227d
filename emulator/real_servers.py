"""Real, third-party platform servers for the sync tests and `airwatt bench sync`, each a process of its own on a
free loopback port: django-ogc-sensorthings (emulator/sensorthings_server under Django's runserver, its own
SQLite file; a dev dependency) and Debian's mosquitto (its own config and persistence file; `./dev setup`
installs it). Both can be stopped and started again on the same port."""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s:\n%s" % (what, proc.returncode, log.read_text()[-3000:]))
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("%s did not listen on %d within %g s:\n%s" % (what, port, timeout_s, log.read_text()[-3000:]))


class Server:
    """A server process that can be stopped (gracefully or with SIGKILL) and started again."""

    name = "server"

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = folder / ("%s.log" % self.name)

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, self.name, self.log)

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class SensorThingsServer(Server):
    """django-ogc-sensorthings 1.2.0 under Django's runserver (threaded WSGI), SQLite in `folder`."""

    name = "sensorthings"

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d/sensorthings/v1.1" % self.port

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DJANGO_SETTINGS_MODULE": "airwatt.emulator.sensorthings_server.settings",
            "STA_DB": str(self.folder / "sta.db"),
            "STA_URL": "http://127.0.0.1:%d/sensorthings" % self.port,
        })
        return env

    def command(self) -> list[str]:
        return [sys.executable, "-m", "django", "runserver", "--noreload", "--skip-checks",
                "127.0.0.1:%d" % self.port]

    def start(self) -> None:
        try:
            import sensorthings  # noqa: F401
        except ImportError:
            raise RuntimeError("django-ogc-sensorthings is not installed: it is a dev dependency"
                               " (./dev setup, or pip install -e '.[dev]')") from None
        if not (self.folder / "sta.db").exists():
            subprocess.run([sys.executable, "-m", "django", "migrate", "-v0"], env=self.env(), check=True,
                           cwd=self.folder)
        super().start()
        self.get("")  # Django answers once the app registry is loaded

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + "/" + path, timeout=30) as resp:
            return json.load(resp)

    def count(self, entity_set: str, where: str) -> int:
        """How many entities of `entity_set` match the OData $filter `where`."""
        answer = self.get("%s?$count=true&$top=0&$filter=%s" % (entity_set, urllib.parse.quote(where)))
        return answer["@iot.count"]

    def seqs(self, datastream: str) -> list[int]:
        """parameters/seq of every Observation of a Datastream, duplicates kept."""
        answer = self.get("Observations?$filter=%s&$select=parameters&$resultFormat=dataArray&$top=10000"
                          % urllib.parse.quote("Datastream/id eq %s" % datastream))
        assert "@iot.nextLink" not in answer
        return [row[0]["seq"] for group in answer["value"] for row in group["dataArray"]]

    def datastreams(self, device: str) -> dict[str, str]:
        """metric -> Datastream id of an AirWatt board."""
        answer = self.get("Datastreams?$select=id,properties&$filter=%s"
                          % urllib.parse.quote("properties/device eq '%s'" % device))
        streams = {d["properties"]["metric"]: d["@iot.id"] for d in answer["value"]}
        if len(streams) != len(answer["value"]):
            raise AssertionError("board %s has two Datastreams of one metric: %s" % (device, answer["value"]))
        return streams


class Mosquitto(Server):
    """Debian's mosquitto with its own config: loopback listener, anonymous, persistence in `folder`, and no
    limit on the queue of a slow QoS 1 subscriber (the default, 1000, drops messages beyond it)."""

    name = "mosquitto"

    @property
    def url(self) -> str:
        return "mqtt://127.0.0.1:%d" % self.port

    def command(self) -> list[str]:
        if not os.access(MOSQUITTO, os.X_OK):
            raise RuntimeError("%s is missing: ./dev setup installs Debian's mosquitto (as root), or"
                               " apt-get install mosquitto" % MOSQUITTO)
        conf = self.folder / "mosquitto.conf"
        conf.write_text(
            "listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n"
            "max_queued_messages 0\nuser %s\n" % (self.port, self.folder, getpass.getuser())
        )
        return [MOSQUITTO, "-c", str(conf)]
