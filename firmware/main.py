# Runs after boot.py: the board's whole life (see board.py). Ctrl-C stops it and leaves the REPL.
try:
    import board
except Exception as e:
    # A release on probation that cannot even start: keep why, and reset into the previous version (boot.py).
    import sys
    sys.print_exception(e)
    try:
        with open("/fw/boot") as f:
            trying = f.readline().strip() == "trying"
    except OSError:
        trying = False  # the flashed firmware: stay at the REPL for a technician
    if trying:
        with open("/fw/why", "w") as f:
            f.write(("cannot start: %s %s" % (type(e).__name__, e))[:80])
        import machine
        machine.reset()
    raise

board.main()
