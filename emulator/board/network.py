# Emulated `network` module of the ESP32 port (runs on the MicroPython unix port): WLAN station with the ESP32's
# STAT_* codes. connect() returns at once and the link comes up ~CONNECT_MS later (status STAT_CONNECTING, then
# STAT_GOT_IP), as on the chip. The board's config names the access point in range ({"ssid", "key"}; None: any).
# The 'wifi_down' fault takes the access point away: connecting ends in STAT_NO_AP_FOUND, a live link drops
# (STAT_BEACON_TIMEOUT) and every socket fails (see socket.py); while connect() was requested the station keeps
# reconnecting, so the link comes back by itself when the fault clears, as with the ESP32's default reconnects.
# The board reaches the agent over real loopback sockets: the emulated link only gates them.
import boardstate as _bs

_bt = _bs._btime

STA_IF = 0
AP_IF = 1

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_CONNECT_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY = 210
STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD = 211
STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD = 212

AUTH_OPEN = 0
AUTH_WEP = 1
AUTH_WPA_PSK = 2
AUTH_WPA2_PSK = 3
AUTH_WPA_WPA2_PSK = 4
SEC_OPEN = 0
SEC_WPA2 = 3

MODE_11B = 1
MODE_11G = 2
MODE_11N = 4

PHY_LAN8720 = 0

CONNECT_MS = 300  # association + DHCP on a quiet network

_hostname = "airwatt"

# Link state of the station, shared by every WLAN(STA_IF) object (as on the chip).
_st = {"active": False, "want": False, "ssid": None, "key": None, "status": STAT_IDLE, "since": 0, "gen": 0}
_used = [False]  # sockets are gated once the firmware uses the network (or boardenv says this is a board)


def _ap():
    return _bs.config.get("wifi")


def _update():
    # Advance the station's state machine to now; called by every API that looks at the link.
    st = _st
    now = _bt.ticks_ms()
    down = bool(_bs.fault("wifi_down"))
    if not st["active"]:
        return
    s = st["status"]
    if s == STAT_GOT_IP:
        if down:
            st["status"] = STAT_BEACON_TIMEOUT
            st["since"] = now
            st["gen"] += 1  # open sockets are dead
        return
    if s == STAT_CONNECTING:
        if _bt.ticks_diff(now, st["since"]) < CONNECT_MS:
            return
        ap = _ap()
        if down or (ap is not None and ap.get("ssid") != st["ssid"]):
            st["status"] = STAT_NO_AP_FOUND
        elif ap is not None and (ap.get("key") or "") != (st["key"] or ""):
            st["status"] = STAT_WRONG_PASSWORD
        else:
            st["status"] = STAT_GOT_IP
        st["since"] = now
        return
    # failed or dropped: the station retries while a connection is wanted (not after a wrong password)
    if st["want"] and s != STAT_WRONG_PASSWORD and s != STAT_IDLE and _bt.ticks_diff(now, st["since"]) >= 1000:
        st["status"] = STAT_CONNECTING
        st["since"] = now


def link_up():
    """True when the station has an IP and the access point is there (socket.py asks before each use)."""
    _update()
    return _st["active"] and _st["status"] == STAT_GOT_IP


def link_gen():
    return _st["gen"]


def gated():
    return _used[0]


class WLAN:
    IF_STA = 0
    IF_AP = 1
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2

    def __init__(self, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id
        self._cfg = {"pm": 1, "reconnects": -1, "txpower": 20, "channel": 1, "hidden": False, "security": 3}
        if interface_id == STA_IF:
            _used[0] = True

    def active(self, is_active=None):
        if is_active is None:
            return _st["active"] if self._if == STA_IF else False
        if self._if != STA_IF:
            return None
        if not is_active and _st["active"]:
            _st["gen"] += 1
            _st["status"] = STAT_IDLE
            _st["want"] = False
        _st["active"] = bool(is_active)
        return None

    def connect(self, ssid=None, key=None, *, bssid=None):
        if self._if != STA_IF:
            raise OSError("STA required")
        if not _st["active"]:
            raise OSError("Wifi Not Started")
        _update()
        if _st["status"] == STAT_GOT_IP:
            _st["gen"] += 1
        if ssid is not None:
            _st["ssid"] = ssid
            _st["key"] = key
        _st["want"] = True
        _st["status"] = STAT_CONNECTING
        _st["since"] = _bt.ticks_ms()

    def disconnect(self):
        if _st["status"] == STAT_GOT_IP:
            _st["gen"] += 1
        _st["want"] = False
        _st["status"] = STAT_IDLE

    def isconnected(self):
        if self._if != STA_IF:
            return False
        return link_up()

    def status(self, param=None):
        _update()
        if param is None:
            if self._if != STA_IF:
                return STAT_IDLE
            return _st["status"] if _st["active"] else STAT_IDLE
        if param == "rssi":
            if not link_up():
                raise OSError("STA not connected")
            return int(_bs.config.get("rssi", -61)) - (_bt.ticks_ms() // 1000) % 5
        if param == "stations":
            return []
        raise ValueError("unknown status param")

    def scan(self):
        if not _st["active"]:
            raise OSError("Wifi Not Started")
        ap = _ap()
        if ap is None or _bs.fault("wifi_down"):
            return []
        return [(ap["ssid"].encode(), b"\x24\x0a\xc4\x00\x00\x01", 6, int(_bs.config.get("rssi", -61)), 3, False)]

    def ifconfig(self, config=None):
        if config is not None:
            return None
        if link_up():
            return ("192.168.4.23", "255.255.255.0", "192.168.4.1", "192.168.4.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def ipconfig(self, *args, **kw):
        if args and args[0] == "addr4":
            c = self.ifconfig()
            return (c[0], c[1])
        return None

    def config(self, *args, **kw):
        if kw:
            for k in kw:
                if k in ("ssid", "key"):
                    continue
                self._cfg[k] = kw[k]
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        p = args[0]
        if p == "mac":
            uid = _bs.config.get("unique_id") or "a4cf12345678"
            return bytes(int(uid[i : i + 2], 16) for i in range(0, 12, 2))
        if p in ("ssid", "essid"):
            return _st["ssid"] or ""
        if p == "hostname":
            return _hostname
        if p == "rssi":
            return self.status("rssi")
        if p in self._cfg:
            return self._cfg[p]
        raise ValueError("unknown config param")


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


def country(code=None):
    return "XX" if code is None else None


def phy_mode(mode=None):
    return MODE_11B | MODE_11G | MODE_11N if mode is None else None
