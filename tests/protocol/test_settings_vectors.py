# runs on: cpython, micropython
"""The agent's settings in an answer and the board's acknowledgement in its status, against the golden vectors
(protocol/vectors/settings.json), on both runtimes."""
try:
    from airwatt.protocol import check, wire
except ImportError:  # MicroPython: the repository root is on MICROPYPATH
    from protocol import check, wire
from golden import vectors


def _vectors():
    return vectors("settings.json")


def _verdict(fn, msg):
    try:
        fn(msg)
        return True, None
    except check.ProtocolError as err:
        return False, err.path


def test_answer_vectors():
    for vec in _vectors()["answers"]:
        assert _verdict(check.check_answer, vec["message"]) == (vec["valid"], vec.get("error_at")), vec["name"]


def test_status_vectors_and_canonical_bytes():
    for vec in _vectors()["statuses"]:
        m = vec["message"]
        assert _verdict(check.check_status, m) == (vec["valid"], vec.get("error_at")), vec["name"]
        if vec["valid"]:
            got = wire.encode_status(m["uptime_s"], m["free_heap"], m["rssi"], m["buffer_depth"], m["dropped"],
                                     m["errors"], m["time_sync"], m.get("settings"), m.get("fw"))
            assert got.decode() == vec["canonical"], vec["name"]


def test_batch_vectors():
    for vec in _vectors()["batches"]:
        check.check_batch(vec["message"])
        assert wire.canonical_batch(vec["message"]).decode() == vec["canonical"], vec["name"]
