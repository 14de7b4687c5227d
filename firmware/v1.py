# Protocol v1 on the board, loaded only when used: the compact log's readings as canonical v1 JSON and the v1
# batch body of them, for a board configured with protocol 1; and the old store's records taken over after a
# re-flash (clog_migrate.py).
import json

from protocol import packed, wire


def append(log, seq, payload):
    """Take one reading as canonical v1 JSON bytes (wire.encode_reading), as store.Store does."""
    r = json.loads(payload)
    if r["seq"] != seq:
        raise ValueError("payload seq %d is not %d" % (r["seq"], seq))
    log.add(seq, r["boot"], r["t"], r["ticks"], r["sensor"], r["values"], r["flags"])


def readings(log, max_count=100):
    """Oldest-first committed readings after the cursor, as packed.unpack gives them."""
    out = []
    want = log.cursor + 1
    files = log._files
    if not files or want >= log._committed:
        return out
    i = len(files) - 1
    while i > 0 and files[i] > want:
        i -= 1
    while i < len(files) and len(out) < max_count:
        first = files[i]
        hf, ho, hs = log._hint
        off, seq = (ho, hs) if hf == first and hs <= want else (0, first)
        with open(log._path(first, log._counts[i]), "rb") as f:
            while len(out) < max_count:
                n = log._read_frame(f, off)
                if not n:
                    break  # the end, or damage (flash rot): on to the next file
                c = log._fb[1]
                if seq + c > want:
                    packed.unpack(log._fb, seq, out, want, max_count - len(out))
                    if len(out) < max_count or out[-1][0] == seq + c - 1:
                        log._hint = (first, off + n, seq + c)
                    else:
                        log._hint = (first, off, seq)
                off += n
                seq += c
        i += 1
    return out


def pending(log, max_count=50, max_bytes=4096):
    """Oldest-first [(seq, canonical v1 JSON)] committed after the cursor; at least one when any is."""
    out, total = [], 0
    for r in readings(log, max_count):
        p = wire.encode_reading_quanta(r[0], r[1], r[2], r[3], r[4], r[6], r[7])
        if out and total + len(p) > max_bytes:
            break
        out.append((r[0], p))
        total += len(p)
    return out


def batch(up, status):
    """The uplink's next v1 batch (body, its length, first seq, last seq) from its store's pending(), or None."""
    from uplink import MAX_BODY_V2  # a v1 body is built whole: the v2 bound keeps it within the board's heap
    room = MAX_BODY_V2 - 96 - len(up.device) - len(up.fw) - (len(status) if status else 0)
    n = up.batch_max
    while True:
        recs = up.store.pending(n, room)
        if not recs:
            return None
        try:
            body = wire.batch_body(up.device, up.fw, up.boot, up.clock.ms(), [r[1] for r in recs], status)
            return body, len(body), recs[0][0], recs[-1][0]
        except ValueError:
            if len(recs) == 1:
                raise
            n = len(recs) // 2
