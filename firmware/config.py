# config.json: read and validated once at boot. Every problem raises ConfigError with one line that names the
# key and says what is expected, so a technician can fix it from the serial console. Documented in README.md
# and config.example.json.
import json

try:
    from protocol import fields  # the board: protocol/ is on the flash
except ImportError:  # CPython (the agent reads a board's config with these rules): the installed package
    from airwatt.protocol import fields

PATH = "/config.json"

_HEX = "0123456789abcdef"
KINDS = ("energy", "pm", "co2")
# Per-kind: bus ("uart" | "i2c"), default address, default interval_s, default stuck_n.
# stuck_n: identical values this many times in a row flags "stuck"; PM in a clean room can sit at the same
# small integers for a long time, so it needs a much longer run before it is suspicious.
_KIND = {
    "energy": ("uart", 0xF8, 10, 30),
    "pm": ("uart", None, 60, 120),
    "co2": ("i2c", 0x62, 30, 20),
}
_TOP = ("device", "key", "wifi", "agent_url", "sensors", "capacity", "commit_s", "protocol", "batch_max", "upload_s", "ntp",
        "data_dir", "wdt_s", "stall_s", "selftest_s", "http_timeout_s")
_SENSOR = ("kind", "uart", "tx", "rx", "i2c", "scl", "sda", "freq", "addr", "interval_s", "warmup_s", "stuck_n",
           "meters")
_METER = ("addr", "name", "phase", "circuit", "supply")
PHASES = ("L1", "L2", "L3")
MAX_METERS = 16
_NAME_CHARS = fields.DEVICE_ALPHABET + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class ConfigError(ValueError):
    pass


def _fail(key, expected, got=None):
    if got is None:
        raise ConfigError("config.json: %s: expected %s" % (key, expected))
    raise ConfigError("config.json: %s: expected %s, got %s" % (key, expected, _show(got)))


def _show(x):
    s = json.dumps(x)
    return s if len(s) <= 40 else s[:37] + "..."


def _int(obj, key, where, lo, hi, default=None):
    if key not in obj:
        if default is None:
            _fail(where + key, "an integer %d..%d (missing)" % (lo, hi))
        return default
    x = obj[key]
    if not isinstance(x, int) or isinstance(x, bool) or x < lo or x > hi:
        _fail(where + key, "an integer %d..%d" % (lo, hi), x)
    return x


def _str(obj, key, where, lo, hi, chars=None, default=None):
    if key not in obj:
        if default is None:
            _fail(where + key, "a string of %d..%d characters (missing)" % (lo, hi))
        return default
    x = obj[key]
    if not isinstance(x, str) or not lo <= len(x) <= hi:
        _fail(where + key, "a string of %d..%d characters" % (lo, hi), x)
    if chars is not None:
        for ch in x:
            if ch not in chars:
                _fail(where + key, "only the characters %s" % chars, x)
    return x


def _known(obj, keys, where):
    for k in obj:
        if k not in keys:
            _fail(where + k, "no such key (known: %s)" % ", ".join(keys))


def parse_url(url):
    """'http://host:port[/prefix]' -> (host, port, prefix); raises ConfigError."""
    if not isinstance(url, str) or not url.startswith("http://"):
        _fail("agent_url", "http://HOST:PORT (plain HTTP on the site network)", url)
    rest = url[7:]
    slash = rest.find("/")
    prefix = ""
    if slash >= 0:
        rest, prefix = rest[:slash], rest[slash:].rstrip("/")
    colon = rest.rfind(":")
    if colon <= 0:
        _fail("agent_url", "http://HOST:PORT with an explicit port", url)
    host, port = rest[:colon], rest[colon + 1:]
    try:
        port = int(port)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        _fail("agent_url", "a port 1..65535 in http://HOST:PORT", url)
    return host, port, prefix


def meters(raw, where="sensors[0].meters"):
    """Check a list of energy meters on one Modbus bus: [{"addr": 1..247, "name", "phase": L1|L2|L3 or
    "circuit": name, "supply": bool}]. Returns a checked copy; "supply" defaults to the phase meters, or to
    the only meter (the meters the site's incoming supply flows through: what carbon and kWh count)."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_METERS:
        _fail(where, "a list of 1..%d meters like {\"addr\": 1, \"name\": \"L1\", \"phase\": \"L1\"}"
              % MAX_METERS, raw)
    out = []
    addrs = []
    names = []
    phases = []
    for i, m in enumerate(raw):
        w = "%s[%d]." % (where, i)
        if not isinstance(m, dict):
            _fail(w[:-1], "an object like {\"addr\": 1, \"name\": \"L1\", \"phase\": \"L1\"}", m)
        _known(m, _METER, w)
        addr = _int(m, "addr", w, 1, 247)
        if addr in addrs:
            _fail(w + "addr", "a different address for each meter on the bus (%d is used twice)" % addr)
        addrs.append(addr)
        name = _str(m, "name", w, 1, 16, _NAME_CHARS)
        if name in names:
            _fail(w + "name", "a different name for each meter (%s is used twice)" % name)
        names.append(name)
        got = {"addr": addr, "name": name}
        if ("phase" in m) == ("circuit" in m):
            _fail(w[:-1], "either \"phase\" (L1, L2, L3) or \"circuit\" (a name), not both or neither")
        if "phase" in m:
            if m["phase"] not in PHASES:
                _fail(w + "phase", "one of L1, L2, L3", m["phase"])
            if m["phase"] in phases:
                _fail(w + "phase", "one meter per phase (%s is metered twice)" % m["phase"])
            phases.append(m["phase"])
            got["phase"] = m["phase"]
        else:
            got["circuit"] = _str(m, "circuit", w, 1, 32, _NAME_CHARS)
        if "supply" in m and not isinstance(m["supply"], bool):
            _fail(w + "supply", "true or false", m["supply"])
        out.append(got)
    for m, r in zip(out, raw):
        m["supply"] = r["supply"] if "supply" in r else ("phase" in m if phases else len(out) == 1)
    return out


def _sensor(s, i, seen):
    where = "sensors[%d]." % i
    if not isinstance(s, dict):
        _fail(where[:-1], "an object like {\"kind\": \"pm\", ...}", s)
    kind = s.get("kind")
    if kind not in KINDS:
        _fail(where + "kind", "one of " + ", ".join(KINDS), kind)
    if kind in seen:
        _fail(where + "kind", "each kind at most once (readings carry only the kind)", kind)
    seen.append(kind)
    bus, addr, interval, stuck = _KIND[kind]
    _known(s, _SENSOR, where)
    out = {"kind": kind}
    if bus == "uart":
        for k in ("i2c", "scl", "sda", "freq"):
            if k in s:
                _fail(where + k, "no I2C keys on a UART sensor (%s): uart, tx, rx" % kind)
        out["uart"] = _int(s, "uart", where, 1, 2)
        out["tx"] = _int(s, "tx", where, 0, 48)
        out["rx"] = _int(s, "rx", where, 0, 48)
    else:
        for k in ("uart", "tx", "rx"):
            if k in s:
                _fail(where + k, "no UART keys on an I2C sensor (%s): i2c, scl, sda" % kind)
        out["i2c"] = _int(s, "i2c", where, 0, 1)
        out["scl"] = _int(s, "scl", where, 0, 48)
        out["sda"] = _int(s, "sda", where, 0, 48)
        out["freq"] = _int(s, "freq", where, 10000, 400000, 100000)
    if "meters" in s:
        if kind != "energy":
            _fail(where + "meters", "meters only for kind energy (PZEM-004T meters on one Modbus bus)")
        if "addr" in s:
            _fail(where + "addr", "no addr beside meters: each meter has its own")
        out["meters"] = meters(s["meters"], where + "meters")
    elif addr is not None:
        lo = 1 if kind == "energy" else 0x08
        out["addr"] = _int(s, "addr", where, lo, 0xF8 if kind == "energy" else 0x77, addr)
    elif "addr" in s:
        _fail(where + "addr", "no address for kind %s" % kind)
    out["interval_s"] = _int(s, "interval_s", where, 5, 86400, interval)
    if kind == "pm":
        out["warmup_s"] = _int(s, "warmup_s", where, 0, 300, 30)
    elif "warmup_s" in s:
        _fail(where + "warmup_s", "warmup_s only for kind pm")
    out["stuck_n"] = _int(s, "stuck_n", where, 2, 100000, stuck)
    return out


def validate(raw):
    """A checked copy of a parsed config.json, defaults filled in; raises ConfigError naming the bad key."""
    if not isinstance(raw, dict):
        _fail("(top level)", "a JSON object")
    _known(raw, _TOP, "")
    cfg = {}
    cfg["device"] = _str(raw, "device", "", 1, fields.DEVICE_ID_MAX, fields.DEVICE_ALPHABET)
    key = _str(raw, "key", "", 32, 128, _HEX + "ABCDEF")
    if len(key) % 2:
        _fail("key", "an even number of hex digits (16..64 bytes)", key)
    cfg["key"] = key.lower()
    wifi = raw.get("wifi")
    if not isinstance(wifi, dict):
        _fail("wifi", "an object {\"ssid\": ..., \"password\": ...}", wifi)
    _known(wifi, ("ssid", "password"), "wifi.")
    cfg["ssid"] = _str(wifi, "ssid", "wifi.", 1, 32)
    cfg["password"] = _str(wifi, "password", "wifi.", 0, 64, None, "")
    if "agent_url" not in raw:
        _fail("agent_url", "http://HOST:PORT (missing)")
    cfg["agent_url"] = raw["agent_url"]
    cfg["host"], cfg["port"], cfg["prefix"] = parse_url(raw["agent_url"])
    sensors = raw.get("sensors")
    if not isinstance(sensors, list) or not sensors:
        _fail("sensors", "a non-empty list of sensor objects", sensors)
    seen = []
    cfg["sensors"] = [_sensor(s, i, seen) for i, s in enumerate(sensors)]
    uarts = [s["uart"] for s in cfg["sensors"] if "uart" in s]
    for u in uarts:
        if uarts.count(u) > 1:
            _fail("sensors", "a different uart id for each UART sensor (uart %d is used twice)" % u)
    # 0: as many readings as the flash holds (clog.Log sizes it when the log is created).
    cfg["capacity"] = _int(raw, "capacity", "", 0, 10000000, 0)
    if 0 < cfg["capacity"] < 10:
        _fail("capacity", "0 (size from the flash) or an integer 10..10000000", cfg["capacity"])
    # Readings wait in RAM at most this long before they are committed to flash (what a power cut can lose).
    cfg["commit_s"] = _int(raw, "commit_s", "", 0, 3600, 60)
    cfg["protocol"] = _int(raw, "protocol", "", 1, 2, 2)  # 1: JSON readings, as boards flashed before v2 send
    for s in cfg["sensors"]:
        if "meters" in s and cfg["protocol"] != 2:
            _fail("protocol", "2 with energy meters listed (their readings carry the meter: a v2 instance)",
                  cfg["protocol"])
    cfg["batch_max"] = _int(raw, "batch_max", "", 1, 100, 50)
    cfg["upload_s"] = _int(raw, "upload_s", "", 1, 86400, 30)
    ntp = raw.get("ntp", "")
    if ntp is not False and not isinstance(ntp, str):
        _fail("ntp", "an NTP host name, or \"\" / false for none", ntp)
    cfg["ntp"] = ntp or ""
    cfg["data_dir"] = _str(raw, "data_dir", "", 2, 200, None, "/data")
    if cfg["data_dir"][0] != "/":
        _fail("data_dir", "an absolute path like /data", cfg["data_dir"])
    cfg["wdt_s"] = _int(raw, "wdt_s", "", 0, 600, 60)
    cfg["stall_s"] = _int(raw, "stall_s", "", 10, 3600, 120)
    cfg["selftest_s"] = _int(raw, "selftest_s", "", 5, 600, 60)
    cfg["http_timeout_s"] = _int(raw, "http_timeout_s", "", 1, 120, 10)
    return cfg


def load(path=PATH):
    """Read and validate config.json; raises ConfigError (one line) when it is missing, not JSON or wrong."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("config.json: %s not found: write it with `airwatt flash` (see config.example.json)"
                          % path)
    try:
        raw = json.loads(text)
    except ValueError:
        raise ConfigError("config.json: %s is not valid JSON" % path)
    return validate(raw)
