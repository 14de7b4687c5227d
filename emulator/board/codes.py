# The emulated board's fault names and reset codes, one home for both sides: the MicroPython VM imports this as
# `codes` (emulator/board is on its path) and the host as airwatt.emulator.board.codes. Plain MicroPython: no
# typing, no f-strings beyond what the VM parses.

# machine.reset_cause() numbers, as MicroPython's esp32 port defines them.
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# Exit codes of the VM the bridge understands (also announced on the ctl pipe before the VM dies).
EXIT_SOFT = 64
EXIT_HARD = 65
EXIT_DEEPSLEEP = 66
EXIT_POWERCUT = 67
EXIT_WDT = 68

# Faults of the board as a whole, and of one sensor (set under the sensor's name).
BOARD_FAULTS = ("wifi_down", "hang", "clock_unset", "power_cut_at_write")
SENSOR_FAULTS = ("unplugged", "stuck", "corrupt", "mains_off", "wrong_addr")
SENSORS = ("pzem", "pms", "scd4x")
