"""Writes batches_v2.json, the v2 golden vectors (run once; the file is then pinned: both runtimes must agree
with it). python -m protocol.vectors.make_v2 from the repository root."""

import json
from binascii import b2a_base64
from pathlib import Path

from protocol import packed, v2, wire

DEVICE, FW, BOOT = "kk-city-hall-01", "0.2.0", "0a1b2c3d"
STATUS = {"buffer_depth": 3, "dropped": 0, "errors": {"co2": 0, "energy": 0, "pm": 2}, "free_heap": 81234,
          "rssi": -67, "time_sync": "agent", "uptime_s": 600}


def rows_small():
    return [
        (41, 1790000000, 500000, BOOT, "energy", 0,
         {"voltage": 2298, "current": 4512, "power": 10123, "energy_wh": 1234567, "frequency": 500, "pf": 98}, []),
        (42, 1790000010, 510000, BOOT, "energy", 2,
         {"voltage": 2301, "current": 312, "power": 702, "energy_wh": 98765, "frequency": 500, "pf": 97}, []),
        (43, 1790000010, 510400, BOOT, "pm", 0, {"pm1": 8, "pm10": 41, "pm25": 27}, []),
        (44, 1790000020, 520000, BOOT, "co2", 0, {"co2": 1210, "humidity": 6120, "temperature": 2735}, ["retried"]),
        (45, 1790000020, 520100, BOOT, "energy", 0, {"voltage": 2297, "current": 4501, "energy_wh": 1234570},
         ["alarm"]),
        # a flag past the header's four (the extension byte) and an instance past its nibble (a byte of its own)
        (46, 1790000030, 530000, BOOT, "pm", 17, {"pm1": 30, "pm10": 90, "pm25": 61}, ["retried", "humid"]),
    ]


def rows_full(n=500):
    out, e = [], 1234567
    for i in range(n):
        seq, ticks = 1000 + i, 3600000 + i * 6667
        t = 1790000000 + ticks // 1000 - 3600
        k = i % 9
        if k < 6:
            e += (i * 7) % 5
            v = {"voltage": 2290 + (i * 13) % 30, "current": 4400 + (i * 37) % 300, "power": 10000 + (i * 53) % 700,
                 "energy_wh": e, "frequency": 499 + i % 3, "pf": 95 + i % 4}
            out.append((seq, t, ticks, BOOT, "energy", 0, v, []))
        elif k < 8:
            out.append((seq, t, ticks, BOOT, "co2", 0, {"co2": 800 + (i * 11) % 90, "humidity": 6000 + (i * 7) % 200,
                                                        "temperature": 2700 + (i * 3) % 80}, []))
        else:
            out.append((seq, t, ticks, BOOT, "pm", 0, {"pm1": 5 + i % 9, "pm10": 20 + i % 30, "pm25": 10 + i % 20}, []))
    return out


def body(rows, status=STATUS, sent=4000000):
    return wire.batch_body_v2(DEVICE, FW, BOOT, sent, rows[0][0], len(rows), v2.pack(rows),
                              wire.dumps(status).encode() if status else None)


def vec(name, message, valid, error_at=None, canonical=None):
    v = {"name": name, "valid": valid, "message": message}
    if valid:
        v["canonical"] = canonical
    else:
        v["error_at"] = error_at
    return v


def main():
    vectors = []
    small = body(rows_small())
    vectors.append(vec("v2_three_sensors_and_a_second_meter", json.loads(small), True, canonical=small.decode()))
    full = body(rows_full(), STATUS, 3600000 + 500 * 6667)
    vectors.append(vec("v2_full_batch_500_readings", json.loads(full), True, canonical=full.decode()))
    nostatus = body(rows_small()[:1], None, 600000)
    vectors.append(vec("v2_one_reading_no_status", json.loads(nostatus), True, canonical=nostatus.decode()))
    m = json.loads(small)
    m["data"] = "not base64!"
    vectors.append(vec("v2_data_not_base64", m, False, "data"))
    raw = bytearray(v2.pack(rows_small()))
    raw[12] ^= 1
    m = json.loads(small)
    m["data"] = b2a_base64(bytes(raw))[:-1].decode()
    vectors.append(vec("v2_data_bad_crc", m, False, "data"))
    m = json.loads(small)
    m["n"] = 4
    vectors.append(vec("v2_count_mismatch", m, False, "n"))
    rows = list(packed.KINDS[0])
    packed.KINDS = (tuple([("voltage", 0, 9999, 1, False)] + rows[1:]),) + packed.KINDS[1:]  # a packer without limits
    bad = rows_small()
    bad[0][6]["voltage"] = 3001  # 300.1 V: above the table's 300
    m = json.loads(body(bad))
    packed.KINDS = (tuple(rows),) + packed.KINDS[1:]
    vectors.append(vec("v2_value_above_range", m, False, "readings[0].values.voltage"))
    m = json.loads(small)
    m["readings"] = []
    vectors.append(vec("v2_v1_field_in_v2", m, False, "readings"))
    late = json.loads(body(rows_small(), STATUS, 515000))
    vectors.append(vec("v2_reading_later_than_sent_ticks", late, False, "readings[3].ticks"))
    out = {"about": "Golden v2 upload batches (protocol/packed.py frames in base64): every runtime must give each "
                    "the same verdict and first error path; valid ones also give `canonical`, the exact bytes. "
                    "Made by make_v2.py.", "vectors": vectors}
    Path(__file__).with_name("batches_v2.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
