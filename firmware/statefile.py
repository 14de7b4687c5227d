# The reading buffers' state file (clog.py; store.py, the old buffer): u32 floor, u32 dropped, u32 capacity,
# u32 crc32 of the first 12 bytes. It is replaced atomically: written whole to a temporary file, then renamed over
# the old one. LittleFS renames are atomic, so a power cut leaves the old state or the new one, never a torn one;
# the CRC catches a state that rotted on the flash.
import os
import struct
from binascii import crc32


def read(path, buf):
    """(floor, dropped, capacity) from the state file at path, read into buf (a bytearray of 16), or None when
    it is missing, short or damaged."""
    try:
        with open(path, "rb") as f:
            n = f.readinto(buf)
    except OSError:
        return None
    floor, dropped, cap, crc = struct.unpack("<IIII", buf)
    if n != 16 or crc != crc32(memoryview(buf)[:12]) & 0xFFFFFFFF:
        return None
    return floor, dropped, cap


def write(path, tmp, buf, floor, dropped, capacity):
    """Replace the state file at path, through tmp (same folder), packed in buf (a bytearray of 16)."""
    struct.pack_into("<III", buf, 0, floor, dropped, capacity)
    struct.pack_into("<I", buf, 12, crc32(memoryview(buf)[:12]) & 0xFFFFFFFF)
    with open(tmp, "wb") as f:
        f.write(buf)
    os.rename(tmp, path)


def save(log, floor, dropped):
    """Write a reading buffer's state (clog.Log or store.Store: its _state, _tmp and _st), then take it as its
    counters' base."""
    write(log._state, log._tmp, log._st, floor, dropped, log.capacity)
    log._floor, log._drop0 = floor, dropped


class Counters:
    """The counters of a reading buffer over its state file (clog.Log, store.Store: each gives `cursor`)."""

    @property
    def depth(self):
        """Readings pending, those not yet committed included."""
        return self.next_seq - 1 - self.cursor

    @property
    def dropped(self):
        return self._drop0 + self.cursor - self._floor
