"""Board-side emulated hardware: runs on MicroPython inside the emulated board (and on CPython)."""
