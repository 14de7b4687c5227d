# Runs first at every boot, before main.py. Kept tiny: a mistake here would make the board unreachable.
# It is also the firmware chooser, which an update never replaces (ota.py writes the pointer it reads).
import gc


def _power_on():
    try:
        import machine
        return machine.reset_cause() == machine.PWRON_RESET
    except Exception:
        return False


def _choose():
    # /fw/boot: state, version, previous, failed, why, probation s. "try": the first boot of a staged version
    # (now on probation); "trying": that boot reset before it confirmed, so back to the previous version with the
    # reason, unless the power was cut (not the version's fault): then its probation starts again.
    import os
    import sys
    try:
        with open("/fw/boot") as f:
            p = f.read().split("\n")
        if p[0] == "try" or (p[0] == "trying" and not _power_on()):
            if p[0] == "trying":
                try:
                    with open("/fw/why") as f:
                        why = f.read(80)
                except OSError:
                    why = ""
                why = why or "reset before its probation ended"
                p = ["ok", p[2], "", p[1], why, "0"]
            else:
                p[0] = "trying"
            with open("/fw/boot.tmp", "w") as f:
                f.write("\n".join(p))
            os.rename("/fw/boot.tmp", "/fw/boot")
        if p[1] and os.stat("/fw/" + p[1]):
            sys.path.insert(1, "/fw/" + p[1])
    except (OSError, IndexError):
        pass  # no pointer (or no folder): the flashed /lib


_choose()
try:
    import esp

    esp.osdebug(None)  # no ROM debug chatter on the serial console the technicians read
except ImportError:
    pass
gc.collect()
# Collect after every 4 KB allocated instead of when the heap is full: objects that live long then land low in
# a clean heap instead of between garbage, which keeps room for the upload body in one piece (fragmentation,
# not size, is what runs a small heap out; see tests/firmware/test_memory.py).
gc.threshold(4096)
