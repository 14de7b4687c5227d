# Runs on the MicroPython VM: lists or runs the test functions of one test module.
#   micropython runner.py list MODULE_PATH
#   micropython runner.py run MODULE_PATH TEST_NAME
import sys


def _load(path):
    slash = path.rfind("/")
    folder, filename = path[:slash], path[slash + 1 :]
    sys.path.append(folder)
    return __import__(filename[:-3])


def _tests(module):
    names = []
    for name in dir(module):
        obj = getattr(module, name)
        # Test functions that take pytest fixtures are CPython-only; MicroPython has no signature inspection,
        # so such functions opt out with a `cpython_only` attribute (see tests/micropython_plugin.py).
        if name.startswith("test") and callable(obj) and not getattr(obj, "cpython_only", False):
            names.append(name)
    names.sort()
    return names


def main():
    verb, path = sys.argv[1], sys.argv[2]
    module = _load(path)
    if verb == "list":
        for name in _tests(module):
            print("TEST " + name)
        return
    getattr(module, sys.argv[3])()
    print("PASS")


main()
