# Runs first at every boot, before main.py. Kept tiny: a mistake here would make the board unreachable.
import gc

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
