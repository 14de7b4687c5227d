# PZEM-004T v3 energy meter: Modbus-RTU over UART (9600 8N1).
# Pure part: crc16, read_request, reset_energy_request, decode, set_address_request, check_set_address,
# read_address_request, decode_address. I/O part: PZEM004T.
import errno

try:
    from asyncio import sleep_ms as _sleep_ms
    from micropython import const
except ImportError:  # CPython
    from .host import const, sleep_ms as _sleep_ms

GENERAL_ADDR = const(0xF8)  # answers whatever its own address is; one meter on the bus only
_READ_INPUT = const(0x04)
_RESET_ENERGY = const(0x42)
_READ_HOLDING = const(0x03)
_WRITE_SINGLE = const(0x06)
_REG_ADDR = const(0x0002)  # holding register: the meter's Modbus address (1..0xF7)
SET_ADDR_LEN = const(8)  # the request, and its echo
ADDR_REPLY_LEN = const(7)  # addr, 0x03, byte count 2, value hi, value lo, crc lo, crc hi
_NREGS = const(10)
FRAME_LEN = const(25)  # addr, func, count 20, 20 data bytes, crc lo, crc hi
_ERROR_LEN = const(5)  # addr, func|0x80, exception code, crc lo, crc hi
_POLL_MS = const(5)

EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "slave failure"}


def crc16(data):
    """CRC16/MODBUS (reflected 0xA001, init 0xFFFF). A frame that carries its own CRC gives 0."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
    return crc


def _with_crc(body):
    crc = crc16(body)
    return bytes(body) + bytes((crc & 0xFF, crc >> 8))


def _check_addr(addr, lowest):
    if not lowest <= addr <= GENERAL_ADDR:
        raise ValueError("PZEM address 0x%02x out of range" % addr)


def read_request(addr):
    """Read input registers 0..9 of the meter at `addr` (0x01..0xF7, or 0xF8 general)."""
    _check_addr(addr, 1)
    return _with_crc((addr, _READ_INPUT, 0, 0, 0, _NREGS))


def reset_energy_request(addr):
    """Reset the energy counter (0x42); the meter echoes the 4 bytes. 0x00 broadcasts (no reply)."""
    _check_addr(addr, 0)
    return _with_crc((addr, _RESET_ENERGY))


def set_address_request(addr, new):
    """Write the meter's address register (0x06, register 0x0002) to `new` (0x01..0xF7), sent to `addr` (its
    address, or 0xF8 when it is the only meter on the bus). The meter echoes the 8 bytes."""
    _check_addr(addr, 1)
    if not 1 <= new <= 0xF7:
        raise ValueError("PZEM address %d out of range: a meter takes 1..247" % new)
    return _with_crc((addr, _WRITE_SINGLE, 0, _REG_ADDR, 0, new))


def check_set_address(frame, request):
    """Raise ValueError unless `frame` is the meter's echo of set_address_request `request` (what a real meter
    sends, address byte included: Tasmota logs F8 06 00 02 00 01 FD A3 for address 1 set through 0xF8)."""
    n = _refuse_error(frame)
    if n != SET_ADDR_LEN:
        raise ValueError("PZEM: address change answered with %d bytes, expected the 8-byte echo" % n)
    if crc16(frame) != 0:
        raise ValueError("PZEM: bad CRC in the address change's answer")
    if bytes(frame) != bytes(request):
        raise ValueError("PZEM: the address change's answer is not the echo of the request")


def read_address_request(addr):
    """Read the address register (0x03, register 0x0002, count 1) of the meter at `addr` (or 0xF8)."""
    _check_addr(addr, 1)
    return _with_crc((addr, _READ_HOLDING, 0, _REG_ADDR, 0, 1))


def decode_address(frame, addr=None):
    """The address a meter reports in its answer to read_address_request(addr); checks length, function, byte
    count, CRC, and that the register agrees with the answer's own address byte (and with `addr` unless 0xF8)."""
    n = _refuse_error(frame)
    if n != ADDR_REPLY_LEN:
        raise ValueError("PZEM: address reply of %d bytes, expected 7" % n)
    if frame[1] != _READ_HOLDING or frame[2] != 2:
        raise ValueError("PZEM: not an answer to read holding register (function 0x%02x, count %d)"
                         % (frame[1], frame[2]))
    if crc16(frame) != 0:
        raise ValueError("PZEM: bad CRC in the address reply")
    value = _u16(frame, 3)
    if value != frame[0] or not 1 <= value <= 0xF7:
        raise ValueError("PZEM: reply from address 0x%02x says its address is %d" % (frame[0], value))
    if addr is not None and addr != GENERAL_ADDR and value != addr:
        raise ValueError("PZEM: reply from address 0x%02x, expected 0x%02x" % (value, addr))
    return value


def _u16(f, i):
    return (f[i] << 8) | f[i + 1]


def _u32(f, i):
    # 32-bit values are sent low word first.
    return _u16(f, i) | (_u16(f, i + 2) << 16)


def _refuse_error(frame):
    """Raise ValueError if `frame` is an error reply (of the wrong length, or naming its exception); else its
    length."""
    n = len(frame)
    if n >= 2 and frame[1] & 0x80:
        if n != _ERROR_LEN:
            raise ValueError("PZEM: error reply of %d bytes, expected 5" % n)
        check_error(frame)
    return n


def check_error(frame):
    """Raise ValueError if `frame` (>= 5 bytes) is a Modbus error reply, naming the exception code."""
    if len(frame) >= _ERROR_LEN and frame[1] & 0x80:
        if crc16(frame[:_ERROR_LEN]) != 0:
            raise ValueError("PZEM: bad CRC in error reply")
        code = frame[2]
        raise ValueError("PZEM error reply to function 0x%02x: exception 0x%02x (%s)"
                         % (frame[1] & 0x7F, code, EXCEPTIONS.get(code, "unknown")))


def decode(frame, addr=None):
    """Check and decode a read-input-registers reply. `addr` (if not None or 0xF8) must match the reply's.

    Returns voltage V, current A, power W, energy_wh Wh, frequency Hz, pf, alarm (bool).
    Raises ValueError on an error reply, bad length, function, byte count, address or CRC.
    """
    n = len(frame)
    if n < 2:
        raise ValueError("PZEM: short frame (%d bytes)" % n)
    _refuse_error(frame)
    if frame[1] != _READ_INPUT:
        raise ValueError("PZEM: wrong function 0x%02x, expected 0x04" % frame[1])
    if n != FRAME_LEN:
        raise ValueError("PZEM: frame of %d bytes, expected 25" % n)
    if frame[2] != 2 * _NREGS:
        raise ValueError("PZEM: byte count %d, expected 20" % frame[2])
    if crc16(frame) != 0:
        raise ValueError("PZEM: bad CRC")
    if addr is not None and addr != GENERAL_ADDR and frame[0] != addr:
        raise ValueError("PZEM: reply from address 0x%02x, expected 0x%02x" % (frame[0], addr))
    if not 1 <= frame[0] <= GENERAL_ADDR:
        raise ValueError("PZEM: reply from invalid address 0x%02x" % frame[0])
    return {
        "voltage": round(_u16(frame, 3) / 10, 1),
        "current": round(_u32(frame, 5) / 1000, 3),
        "power": round(_u32(frame, 9) / 10, 1),
        "energy_wh": _u32(frame, 13),
        "frequency": round(_u16(frame, 17) / 10, 1),
        "pf": round(_u16(frame, 19) / 100, 2),
        "alarm": _u16(frame, 21) == 0xFFFF,
    }


_METRICS = ("voltage", "current", "power", "energy_wh", "frequency", "pf")


class PZEM004T:
    """One meter on a machine.UART-like bus. read() -> (values, flags); OSError on no answer."""

    KIND = "energy"

    def __init__(self, uart, addr=GENERAL_ADDR, timeout_ms=300):
        _check_addr(addr, 1)
        self.uart = uart
        self.addr = addr
        self.timeout_ms = timeout_ms
        self._req = read_request(addr)
        self._reset = reset_energy_request(addr)
        self._buf = bytearray(FRAME_LEN)  # also holds the shorter address frames
        self._mv = memoryview(self._buf)

    async def start(self):
        self._drain()

    def _drain(self):
        # Stale bytes (a late reply, line noise) must not be taken for the next answer.
        while self.uart.any():
            self.uart.readinto(self._buf)

    def _need(self, got, want):
        # Take the function byte first: an error reply is shorter than the frame we want.
        if got < 2:
            return 2 if want > 2 else want
        return _ERROR_LEN if self._buf[1] & 0x80 else want

    async def _transact(self, request, want):
        """Send `request`, collect `want` bytes (5 for an error reply). Returns the byte count got."""
        self._drain()
        self.uart.write(request)
        got = 0
        waited = 0
        while True:
            avail = self.uart.any()
            while avail and got < want:
                need = self._need(got, want)
                if got >= need:
                    break
                n = self.uart.readinto(self._mv[got:got + min(avail, need - got)])
                got += n or 0
                avail = self.uart.any()
            if got >= 2 and got >= self._need(got, want):
                return got
            if waited >= self.timeout_ms:
                if got == 0:
                    raise OSError(errno.ETIMEDOUT)
                return got  # a short frame: decode() names it
            await _sleep_ms(_POLL_MS)
            waited += _POLL_MS

    async def _read_once(self):
        got = await self._transact(self._req, FRAME_LEN)
        return decode(self._mv[:got], self.addr)

    async def read(self):
        flags = []
        try:
            d = await self._read_once()
        except ValueError:
            # One bad frame (noise on a long bus) is retried once; a second one is raised for counting.
            d = await self._read_once()
            flags.append("retried")
        if d["alarm"]:
            flags.append("alarm")
        values = {}
        for k in _METRICS:
            values[k] = d[k]
        return values, flags

    async def reset_energy(self):
        """Reset the meter's energy counter; raises ValueError unless the meter echoes the request."""
        got = await self._transact(self._reset, 4)
        frame = self._mv[:got]
        check_error(frame)
        if bytes(frame) != self._reset and not (self.addr == GENERAL_ADDR and got == 4 and frame[1] == _RESET_ENERGY
                                                and crc16(frame) == 0):
            raise ValueError("PZEM: reset energy not confirmed")

    async def read_address(self):
        """The address the meter reports (read through self.addr, which may be 0xF8); ValueError on a bad
        answer (two meters answering 0xF8 at once garble it), OSError when none comes."""
        got = await self._transact(read_address_request(self.addr), ADDR_REPLY_LEN)
        return decode_address(self._mv[:got], self.addr)

    async def set_address(self, new):
        """Give the meter the address `new`; raises ValueError unless it echoes the command. Later requests
        go to the new address."""
        req = set_address_request(self.addr, new)
        got = await self._transact(req, SET_ADDR_LEN)
        check_set_address(self._mv[:got], req)
        self.addr = new
        self._req = read_request(new)
        self._reset = reset_energy_request(new)
