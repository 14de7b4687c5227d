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


def build(cfg, make=driver):
    """sampler.Sensor per config entry (drivers from make); one whose driver cannot be built fails on its own
    (driver None)."""
    out = []
    for s in cfg["sensors"]:
        try:
            d = make(s)
        except Exception as e:  # missing module, bad pins: this sensor fails, the others run
            print("SENSOR %s cannot be set up: %s %s" % (s["kind"], type(e).__name__, e))
            d = None
        warmup = s.get("warmup_s", 0) * 1000
        out.append(sampler.Sensor(s["kind"], d, s["interval_s"] * 1000, s["stuck_n"], warmup))
    return out
