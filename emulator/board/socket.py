# Emulated board's `socket` module (runs on the MicroPython unix port): the VM's real sockets (the board reaches the
# agent over real loopback TCP), gated by the emulated Wi-Fi link of network.py. Once the board uses the network,
# a socket only works while the station has an IP: otherwise connect() fails with EHOSTUNREACH as lwIP does, and
# a link drop kills the sockets opened before it (ECONNABORTED on the next use). The firmware's HTTP client
# (uplink.exchange) and asyncio.open_connection both import this module, so both are gated.
from native import native

_s = native("socket", globals())

import network as _net

_EHOSTUNREACH = 113
_ECONNABORTED = 103
_EAI_FAIL = -202  # what the ESP32 port raises when a name cannot be resolved


def _check_up():
    if _net.gated() and not _net.link_up():
        raise OSError(_EHOSTUNREACH)


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    if _net.gated() and not _net.link_up():
        raise OSError(_EAI_FAIL)
    return _s.getaddrinfo(host, port, af, type, proto, flags)


class socket(_s.socket):
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        super().__init__(af, type, proto)
        self._gen = _net.link_gen()

    def _live(self):
        if _net.gated() and (not _net.link_up() or _net.link_gen() != self._gen):
            raise OSError(_ECONNABORTED)

    def connect(self, addr):
        _check_up()
        self._gen = _net.link_gen()
        return super().connect(addr)

    def send(self, buf):
        self._live()
        return super().send(buf)

    def sendall(self, buf):
        self._live()
        return super().sendall(buf)

    def write(self, buf, *args):
        self._live()
        return super().write(buf, *args)

    def recv(self, n):
        self._live()
        return super().recv(n)

    def read(self, *args):
        self._live()
        return super().read(*args)

    def readinto(self, buf, *args):
        self._live()
        return super().readinto(buf, *args)

    def readline(self):
        self._live()
        return super().readline()
