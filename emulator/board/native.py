# The VM's own module behind a name this folder takes over (time, socket): the emulated board's modules come first
# on the VM's path, so a plain import would find them again. Runs on the MicroPython VM only.
import sys


def native(name, into=None):
    """The VM's built-in module `name`, imported with an empty sys.path; with `into` (a module's globals()), its
    public names are copied there as `from name import *` would, for the module to override what it emulates."""
    path = sys.path
    sys.path = ()
    try:
        module = __import__(name)
    finally:
        sys.path = path
    if into is not None:
        for attr in dir(module):
            if not attr.startswith("_"):
                into[attr] = getattr(module, attr)
    return module
