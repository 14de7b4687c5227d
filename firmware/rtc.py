# The board's RTC and NTP: civil date maths to read and set the RTC (so the time survives a soft or watchdog
# reset), and the NTP query. Each runs about once a boot (clock.py, board.py, wifi.py), so the callers load this
# module for it and drop it after: the loops' heap does not hold it.
import time


def _days_from_civil(y, m, d):
    # Howard Hinnant's algorithm: days since 1970-01-01, no dependency on the port's time epoch.
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def unix_from_datetime(dt):
    """machine.RTC().datetime() tuple (y, m, d, wd, h, mi, s, sub) -> Unix seconds."""
    return _days_from_civil(dt[0], dt[1], dt[2]) * 86400 + dt[4] * 3600 + dt[5] * 60 + dt[6]


def datetime_from_unix(t):
    """Unix seconds -> the tuple machine.RTC().datetime() takes (weekday 0 = Monday)."""
    days, s = divmod(int(t), 86400)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (m <= 2)
    return (y, m, d, (days + 3) % 7, s // 3600, s // 60 % 60, s % 60, 0)


def set_rtc(unix_s):
    """Set the board's RTC (machine.RTC) so the time survives a soft or watchdog reset."""
    try:
        import machine
        machine.RTC().datetime(datetime_from_unix(unix_s))
    except Exception:  # no RTC on this port: the Clock still has the time
        pass


def rtc_time(clock):
    """Use the RTC's time if it kept a valid one across a soft or watchdog reset (ESP32: lost on power cut)."""
    try:
        import machine
        t = unix_from_datetime(machine.RTC().datetime())
    except Exception:
        return False
    return clock.set_wall(t, "none")


def ntp_sync(clock, host):
    """Set the clock from NTP (blocking, ~1 s timeout); guarded: False when there is no ntptime or no answer."""
    try:
        import ntptime
        ntptime.host = host
        t = ntptime.time()
        if time.gmtime(0)[0] == 2000:  # a port whose epoch is 2000: NTP time comes back in that epoch
            t += 946684800
    except Exception:
        return False
    if clock.set_wall(t, "ntp"):
        set_rtc(t)
        return True
    return False
