"""Protocol v2 on the agent's side (runs on both runtimes; the board does not load it): decode and
canonicalise a v2 batch, whose readings travel packed (protocol/packed.py) in base64 `data`."""

from binascii import a2b_base64

from . import fields, packed, wire


def readings_v2(batch):
    """The readings of a parsed v2 batch as v1 reading objects (values as numbers with the table's decimals,
    "instance" only when not 0). Raises ValueError when `data` does not decode."""
    try:
        data = a2b_base64(batch["data"])
    except Exception:
        raise ValueError("is not base64")
    out = []
    for r in unpack_all(data, batch["first_seq"]):
        vals = {}
        for row in fields.metrics(r[4]):
            if row[1] in r[6]:
                q = r[6][row[1]]
                vals[row[1]] = q if row[7] == 0 else q / 10 ** row[7]
        d = {"boot": r[3], "flags": r[7], "sensor": r[4], "seq": r[0], "t": r[1], "ticks": r[2], "values": vals}
        if r[5]:
            d["instance"] = r[5]
        out.append(d)
    return out


def canonical_batch_v2(batch, readings):
    """Canonical bytes of a parsed, valid v2 batch whose readings (readings_v2) are given."""
    rows = []
    for r in readings:
        q = {}
        for row in fields.metrics(r["sensor"]):
            if row[1] in r["values"]:
                q[row[1]] = packed.quanta(r["values"][row[1]], row[7])
        rows.append((r["seq"], r["t"], r["ticks"], r["boot"], r["sensor"], r.get("instance", 0), q, r["flags"]))
    status = batch.get("status")
    if status is not None:
        status = wire.dumps(status).encode()
    return wire.batch_body_v2(batch["device"], batch["fw"], batch["boot"], batch["sent_ticks"], batch["first_seq"],
                              len(rows), pack(rows), status)


def pack(readings, size=8192):
    """Frames (bytes) of readings given as unpack gives them, oldest first with consecutive seqs: what a v2
    batch carries in `data`. Deterministic: the same readings give the same bytes on every runtime."""
    pk = packed.Packer(size)
    out = bytearray()
    buf = bytearray(size)
    for r in readings:
        ok = pk.add(r[3], r[1], r[2], r[4], r[6], r[7], r[5], True)
        if not ok:
            n = pk.frame(buf)
            out.extend(memoryview(buf)[:n])
            pk.clear()
            if not pk.add(r[3], r[1], r[2], r[4], r[6], r[7], r[5], True):
                raise ValueError("reading %d does not fit a frame" % r[0])
    if pk.count:
        n = pk.frame(buf)
        out.extend(memoryview(buf)[:n])
    return bytes(out)


def unpack_all(data, first_seq):
    """Every reading of concatenated frames, seqs from first_seq on; ValueError naming the damaged frame."""
    out = []
    i = 0
    k = 0
    seq = first_seq
    while i < len(data):
        if len(data) - i < packed.HEAD + 4:
            raise ValueError("frame %d is cut short" % k)
        n = packed.HEAD + (data[i + 2] | data[i + 3] << 8) + 4
        fr = data[i:i + n]
        if not packed.frame_ok(fr, len(fr)) or fr[1] == 0:
            raise ValueError("frame %d is damaged (bad magic, length or CRC)" % k)
        try:
            packed.unpack(fr, seq, out)
        except (IndexError, ValueError):
            raise ValueError("frame %d does not decode" % k)
        seq += fr[1]
        i += n
        k += 1
    return out
