# The configured sensors on their buses: each driver built from its config entry, wrapped in the sampler's
# schedule. Boot-only: the board imports it to build them and drops it afterwards.
import sampler


def driver(s):
    """The driver object for one validated sensor entry; raises (ImportError, OSError, ValueError) when it
    cannot be built, which the caller turns into a failing sensor."""
    import machine
    kind = s["kind"]
    if kind == "energy":
        import pzem004t
        uart = machine.UART(s["uart"], baudrate=9600, tx=s["tx"], rx=s["rx"])
        return pzem004t.PZEM004T(uart, addr=s["addr"])
    if kind == "pm":
        import pms5003
        uart = machine.UART(s["uart"], baudrate=9600, tx=s["tx"], rx=s["rx"])
        return pms5003.PMS5003(uart, warmup_ms=s["warmup_s"] * 1000)
    import scd4x
    i2c = machine.I2C(s["i2c"], scl=machine.Pin(s["scl"]), sda=machine.Pin(s["sda"]), freq=s["freq"])
    return scd4x.SCD4x(i2c, addr=s["addr"])


def _meters(s, out):
    """One sampler sensor per meter of an energy bus, all on one UART: read in turn (the sampler awaits each
    read), each with its own errors and flags, its Modbus address as its instance."""
    import pzem004t
    try:
        import machine
        uart = machine.UART(s["uart"], baudrate=9600, tx=s["tx"], rx=s["rx"])
    except Exception as e:  # every meter on the bus then fails on its own line, the other sensors run
        print("SENSOR energy bus cannot be set up: %s %s" % (type(e).__name__, e))
        uart = None
    for m in s["meters"]:
        d = pzem004t.PZEM004T(uart, addr=m["addr"]) if uart is not None else None
        out.append(sampler.Sensor("energy", d, s["interval_s"] * 1000, s["stuck_n"], 0, m["addr"],
                                  "energy:" + m["name"]))


def build(cfg, make=driver):
    """sampler.Sensor per config entry (drivers from make); one whose driver cannot be built fails on its own
    (driver None). Several energy meters on one bus (config "meters"): one sensor each."""
    out = []
    for s in cfg["sensors"]:
        if s.get("meters"):
            _meters(s, out)
            continue
        try:
            d = make(s)
        except Exception as e:  # missing module, bad pins: this sensor fails, the others run
            print("SENSOR %s cannot be set up: %s %s" % (s["kind"], type(e).__name__, e))
            d = None
        warmup = s.get("warmup_s", 0) * 1000
        out.append(sampler.Sensor(s["kind"], d, s["interval_s"] * 1000, s["stuck_n"], warmup))
    return out
