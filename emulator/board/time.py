# Emulated `time` module of the ESP32 port (runs on the MicroPython unix port): everything is the VM's built-in
# time module except the wall clock, which comes from the emulated RTC (machine.RTC) with the ESP32 port's epoch
# 2000-01-01 00:00:00 UTC (time.gmtime(0)[0] == 2000; add 946684800 for unix seconds). gmtime/localtime give
# 8-tuples (year, month, mday, hour, minute, second, weekday, yearday) as on the board; localtime is UTC.
from native import native

native("time", globals())  # ticks_ms, sleep_ms, ... of the VM

import boardstate as _bs


def _days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 730425  # days since 2000-01-01


def _civil_from_days(z):
    z += 730425  # days since 0000-03-01
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def time_ns():
    return (_bs.host_ms() + _bs.rtc_offset_ms) * 1000000


def time():
    return (_bs.host_ms() + _bs.rtc_offset_ms) // 1000


def gmtime(secs=None):
    if secs is None:
        secs = time()
    secs = int(secs)
    days = secs // 86400
    rem = secs - days * 86400
    y, m, d = _civil_from_days(days)
    wday = (days + 5) % 7  # 2000-01-01 was a Saturday; Monday is 0
    yday = days - _days_from_civil(y, 1, 1) + 1
    return (y, m, d, rem // 3600, rem // 60 % 60, rem % 60, wday, yday)


localtime = gmtime


def mktime(t):
    y, mo, d, h, mi, s = t[0], t[1], t[2], t[3], t[4], t[5]
    y += (mo - 1) // 12
    mo = (mo - 1) % 12 + 1
    return _days_from_civil(y, mo, 1) * 86400 + (d - 1) * 86400 + h * 3600 + mi * 60 + s
