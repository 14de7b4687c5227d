# The protocol's golden vectors (protocol/vectors/*.json), loaded for the tests of this folder on both runtimes
# (MicroPython's test runner puts the test module's folder on sys.path).
import json

FOLDER = __file__[: __file__.rfind("/tests/")] + "/protocol/vectors/"


def vectors(name):
    """The parsed vector file `name`, e.g. "batches.json"."""
    with open(FOLDER + name) as f:
        return json.load(f)
