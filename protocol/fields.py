"""The field table: the one source of truth for what a reading may carry.

Runs on MicroPython and CPython. Each metric row is
(sensor kind, metric, unit, UN/CEFACT unit code, type, minimum, maximum, decimals);
resolution is 10 ** -decimals. A value is valid when it is a number of its type within [minimum, maximum].
"""

VERSION = 1
VERSIONS = (1, 2)  # v2: readings packed (protocol/packed.py) in base64; an agent answers each board in its own

METRICS = (
    # PZEM-004T v3 energy meter (100 A model): ranges from its datasheet.
    ("energy", "voltage", "V", "VLT", "float", 0, 300, 1),
    ("energy", "current", "A", "AMP", "float", 0, 100, 3),
    ("energy", "power", "W", "WTT", "float", 0, 30000, 1),
    ("energy", "energy_wh", "Wh", "WHR", "int", 0, 4294967295, 0),  # cumulative meter counter, resettable
    ("energy", "frequency", "Hz", "HTZ", "float", 40, 70, 1),
    ("energy", "pf", "1", "C62", "float", 0, 1, 2),
    # Plantower PMS5003, atmospheric values.
    ("pm", "pm1", "ug/m3", "GQ", "int", 0, 1000, 0),
    ("pm", "pm25", "ug/m3", "GQ", "int", 0, 1000, 0),
    ("pm", "pm10", "ug/m3", "GQ", "int", 0, 1000, 0),
    # Sensirion SCD4x.
    ("co2", "co2", "ppm", "59", "int", 0, 40000, 0),
    ("co2", "temperature", "Cel", "CEL", "float", -10, 60, 2),
    ("co2", "humidity", "%RH", "P1", "float", 0, 100, 2),
)

SENSORS = ("energy", "pm", "co2")

# Quality flags a reading may carry. A reading is only ever built from a frame that passed its checksum;
# frames that fail are counted in the device status, never sent as readings.
FLAGS = (
    "alarm",         # the meter's own over-power alarm is set
    "out_of_range",  # a decoded value lay outside the table's range and was left out of values
    "stuck",         # the sensor returned identical values for longer than is physically plausible
    "retried",       # the value came after one or more bad frames in the same read
    "humid",         # PM taken above the humid_rh setting's relative humidity: optical counts read high in fog
)

TIME_SYNC = ("none", "agent", "ntp")

MAX_BODY_BYTES = 32768
MAX_DEPTH = 8  # nesting of objects and lists in a message body; the deepest message nests 4
MAX_READINGS = 100
MAX_READINGS_V2 = 1000
MAX_BODY_V2 = 8192  # a v2 batch's body: what a board's heap can build and sign
MAX_INSTANCE = 255  # v2 sensor instances: several sensors of one kind on one board (0: the only or first one)
MAX_SEQ = 9007199254740991  # 2**53 - 1: exact in every JSON parser
MIN_WALL_TIME = 1577836800  # 2020-01-01T00:00:00Z: earlier wall times mean the board's clock was never set
MAX_WALL_TIME = 4102444800  # 2100-01-01T00:00:00Z
MAX_TICKS = 9007199254740991
DEVICE_ID_MAX = 32
DEVICE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_"  # the characters of a device id
DEVICE_PATTERN = "^[a-z0-9_-]+$"  # DEVICE_ALPHABET as the regular expression of the models and JSON schemas
FIRMWARE_MAX = 16
BOOT_ID_LEN = 8

STATUS_FIELDS = (
    # (name, minimum, maximum, nullable)
    ("uptime_s", 0, 4294967295, False),
    ("free_heap", 0, 4294967295, False),
    ("rssi", -127, 0, True),
    ("buffer_depth", 0, 4294967295, False),
    ("dropped", 0, 4294967295, False),
)


def metrics(sensor):
    """The table rows of one sensor kind."""
    return tuple(row for row in METRICS if row[0] == sensor)


def metric(sensor, name):
    """The table row of one metric, or None."""
    for row in METRICS:
        if row[0] == sensor and row[1] == name:
            return row
    return None
