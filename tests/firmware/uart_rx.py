# The receive side of machine.UART for the drivers' tests' bus stand-ins (test_drivers.py, test_sensor_emulators.py).
# Runs on CPython and the VM.


class UartRx:
    """readinto() as machine.UART does it, from the bytes in self.rx; a subclass fills rx in _pull()."""

    def __init__(self, preload=b""):
        self.rx = bytearray(preload)

    def _pull(self):
        pass

    def readinto(self, buf, nbytes=None):
        self._pull()
        n = min(len(buf), len(self.rx))
        if nbytes is not None:
            n = min(n, nbytes)
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n
