# Runs first at every boot, before main.py. Kept tiny: a mistake here would make the board unreachable.
import gc

try:
    import esp

    esp.osdebug(None)  # no ROM debug chatter on the serial console the technicians read
except ImportError:
    pass
gc.collect()
