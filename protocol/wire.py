"""Build, canonicalise, size-check and sign AirWatt messages.

Runs unchanged on MicroPython (the board) and CPython (the agent). Canonical JSON: keys sorted, no spaces,
ASCII only, metric values rendered with the field table's decimals from an integer number of quanta, so the
same reading gives the same bytes on a float32 ESP32, the unix port and CPython.
"""

from binascii import b2a_base64

from . import fields
from .canonical import _string, dumps, encode_status, hmac_sha256, sign, verify  # noqa: F401  (wire's API)

def render(value, decimals):
    """A number as canonical JSON text with exactly the field's precision: render(230.14, 1) == '230.1'."""
    if decimals == 0:
        return str(int(round(value)))
    return render_quanta(int(round(value * 10 ** decimals)), decimals)


def render_quanta(q, decimals):
    """An integer number of quanta as canonical JSON text: render_quanta(2301, 1) == '230.1'."""
    if decimals == 0:
        return str(q)
    sign_ = "-" if q < 0 else ""
    digits = str(abs(q))
    if len(digits) <= decimals:
        digits = "0" * (decimals + 1 - len(digits)) + digits
    whole, frac = digits[:-decimals], digits[-decimals:].rstrip("0")
    return sign_ + whole + "." + (frac or "0")


def encode_values(sensor, values, flags):
    """Canonical JSON of a reading's values. Values outside the table's range are left out and
    "out_of_range" is appended to flags (a list), so the board never sends a batch the agent must refuse."""
    parts = []
    for row in fields.metrics(sensor):
        name = row[1]
        if name not in values or values[name] is None:
            continue
        x = values[name]
        if x < row[5] or x > row[6]:
            if "out_of_range" not in flags:
                flags.append("out_of_range")
            continue
        parts.append((name, render(x, row[7])))
    unknown = [k for k in values if fields.metric(sensor, k) is None]
    if unknown:
        raise ValueError("sensor %s has no metric %s" % (sensor, ",".join(unknown)))
    parts.sort()
    return "{" + ",".join('"' + k + '":' + v for k, v in parts) + "}"


def encode_reading(seq, t, ticks, boot, sensor, values, flags=()):
    """One reading as canonical JSON bytes: what the board stores on flash and later uploads unchanged."""
    if sensor not in fields.SENSORS:
        raise ValueError("unknown sensor %s" % sensor)
    flags = list(flags)
    vals = encode_values(sensor, values, flags)
    flags.sort()
    return (
        '{"boot":%s,"flags":%s,"sensor":"%s","seq":%d,"t":%s,"ticks":%d,"values":%s}'
        % (_string(boot), dumps(flags), sensor, seq, "null" if t is None else str(int(t)), ticks, vals)
    ).encode()


def encode_reading_quanta(seq, t, ticks, boot, sensor, quanta, flags):
    """encode_reading from values already in quanta ({metric: int}, in range), as the flash log keeps them."""
    parts = []
    for row in fields.metrics(sensor):
        if row[1] in quanta:
            parts.append('"%s":%s' % (row[1], render_quanta(quanta[row[1]], row[7])))
    parts.sort()
    flags = sorted(flags)
    return (
        '{"boot":%s,"flags":%s,"sensor":"%s","seq":%d,"t":%s,"ticks":%d,"values":{%s}}'
        % (_string(boot), dumps(flags), sensor, seq, "null" if t is None else str(int(t)), ticks, ",".join(parts))
    ).encode()


def batch_body(device, firmware, boot, sent_ticks, readings, status=None):
    """The upload body from already-encoded readings (bytes each) and an optional encoded status.

    Raises ValueError when the body would exceed MAX_BODY_BYTES or MAX_READINGS: send fewer readings."""
    if not readings or len(readings) > fields.MAX_READINGS:
        raise ValueError("a batch holds 1 to %d readings, not %d" % (fields.MAX_READINGS, len(readings)))
    head = '{"boot":%s,"device":%s,"fw":%s,"readings":[' % (_string(boot), _string(device), _string(firmware))
    out = bytearray(head.encode())
    for i, r in enumerate(readings):
        if i:
            out.append(44)  # ","
        out.extend(r)
    out.extend(b'],"sent_ticks":%d,' % sent_ticks)
    if status is not None:
        out.extend(b'"status":')
        out.extend(status)
        out.append(44)
    out.extend(b'"v":%d}' % fields.VERSION)
    if len(out) > fields.MAX_BODY_BYTES:
        raise ValueError("batch of %d bytes exceeds %d: send fewer readings" % (len(out), fields.MAX_BODY_BYTES))
    return bytes(out)


def canonical_batch(batch):
    """Canonical bytes of a parsed, valid batch: the same bytes on every runtime for the same content."""
    readings = [
        encode_reading(r["seq"], r["t"], r["ticks"], r["boot"], r["sensor"], r["values"], r["flags"])
        for r in batch["readings"]
    ]
    status = batch.get("status")
    if status is not None:
        status = dumps(status).encode()
    return batch_body(batch["device"], batch["fw"], batch["boot"], batch["sent_ticks"], readings, status)


def batch_body_v2(device, firmware, boot, sent_ticks, first_seq, n, data, status=None):
    """A v2 upload body: n readings from first_seq on, packed (protocol/packed.py) as bytes data, sent as
    base64. Raises ValueError when it breaks a limit: send fewer readings."""
    if not 1 <= n <= fields.MAX_READINGS_V2:
        raise ValueError("a v2 batch holds 1 to %d readings, not %d" % (fields.MAX_READINGS_V2, n))
    out = bytearray(b'{"boot":%s,"data":"' % _string(boot).encode())
    out.extend(b2a_base64(data)[:-1])  # without the newline
    out.extend(b'","device":%s,"first_seq":%d,"fw":%s,"n":%d,"sent_ticks":%d,' % (
        _string(device).encode(), first_seq, _string(firmware).encode(), n, sent_ticks))
    if status is not None:
        out.extend(b'"status":')
        out.extend(status)
        out.append(44)
    out.extend(b'"v":2}')
    if len(out) > fields.MAX_BODY_V2:
        raise ValueError("batch of %d bytes exceeds %d: send fewer readings" % (len(out), fields.MAX_BODY_V2))
    return bytes(out)
