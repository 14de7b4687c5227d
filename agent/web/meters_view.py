"""The device page's part for a board with several energy meters (agent/meters.py): the phases now (voltage
per phase and its unbalance, power per phase and their total), power per meter over the range, and the
energy by circuit beside the supply's (what the sub-meters do not cover shown as the rest)."""

from __future__ import annotations

from html import escape
from typing import Any

from airwatt.agent import meters, rollup
from airwatt.agent.web import svg
from airwatt.agent.web.i18n import label

COLOURS = {"L1": "#a6761d", "L2": "#222222", "L3": "#7570b3"}  # brown, black, grey-violet: the phase colours
CIRCUIT_COLOURS = ("#1b9e77", "#d95f02", "#e7298a", "#66a61e", "#3b7dd8", "#e6ab02")
RAW_MAX_S = 86400


def voltage_unbalance(volts: list[float]) -> float | None:
    """Largest deviation from the mean over the mean, in % (NEMA MG 1's line voltage unbalance)."""
    if len(volts) < 2:
        return None
    mean = sum(volts) / len(volts)
    return max(abs(v - mean) for v in volts) / mean * 100 if mean > 0 else None


def meters_data(db: Any, device: str, since: float, until: float, kwh_since: float) -> dict | None:
    """What the meters part shows, or None for a board with one meter."""
    ms = meters.of_device(db, device)
    if not ms:
        return None
    for m in ms:
        m["now"] = db.execute(
            "SELECT t, voltage, current, power, pf, flags FROM readings WHERE device = ? AND sensor = 'energy'"
            " AND instance = ? AND t >= ? AND t < ? ORDER BY t DESC LIMIT 1",
            (device, m["instance"], since, until + 1e-6)).fetchone()
        m["wh"] = db.execute("SELECT total(sum) FROM rollup_day WHERE device = ? AND metric = ? AND start >= ?"
                             " AND start < ?", (device, "wh:%d" % m["instance"], kwh_since, until)).fetchone()[0]
        if until - since <= RAW_MAX_S:
            m["points"] = db.execute(
                "SELECT t, power, flags FROM readings WHERE device = ? AND sensor = 'energy' AND instance = ?"
                " AND t >= ? AND t < ? AND power IS NOT NULL ORDER BY t",
                (device, m["instance"], since, until + 1e-6)).fetchall()
            m["hours"] = None
        else:
            m["hours"] = rollup.hours(db, device, ["power:%d" % m["instance"]], since - since % 3600,
                                      until)["power:%d" % m["instance"]]
    supply_wh = db.execute("SELECT total(sum) FROM rollup_day WHERE device = ? AND metric = 'wh' AND start >= ?"
                           " AND start < ?", (device, kwh_since, until)).fetchone()[0]
    return {"meters": ms, "supply_wh": supply_wh, "range": (since, until)}


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else fmt % v


def meters_block(lang: str, data: dict, kw: dict) -> str:
    """HTML of the meters part (tables with ids the browser tests read, and a power plot per meter)."""
    ms = data["meters"]
    out = []
    phases = [m for m in ms if m["phase"]]
    if phases:
        rows = []
        volts, total = [], 0.0
        for m in phases:
            now = m["now"]
            t, v, i, p, pf = (now[0], now[1], now[2], now[3], now[4]) if now else (None,) * 5
            if v is not None:
                volts.append(v)
            total += p or 0.0
            rows.append('<tr data-phase="%s"><td>%s</td><td>%s</td><td class="num">%s</td><td class="num">%s</td>'
                        '<td class="num">%s</td><td class="num">%s</td><td>%s</td></tr>'
                        % (m["phase"], m["phase"], escape(m["name"]), _num(v, "%.1f"), _num(i, "%.3f"),
                           _num(p, "%.1f"), _num(pf, "%.2f"),
                           escape(label(lang, "meter_silent")) if now is None else ""))
        unb = voltage_unbalance(volts)
        out.append('<h2 id="phases">%s</h2>' % escape(label(lang, "phases")))
        out.append('<table id="phase-table"><tr><th>%s</th><th>%s</th><th>V</th><th>A</th><th>W</th><th>PF</th>'
                   '<th></th></tr>%s<tr class="total"><td colspan="4">%s</td><td class="num" id="phase-total">%.1f'
                   '</td><td colspan="2"></td></tr></table>'
                   % (escape(label(lang, "phase")), escape(label(lang, "meter")), "".join(rows),
                      escape(label(lang, "total_power")), total))
        out.append('<p id="voltage-balance">%s: <b data-unbalance="%s">%s</b> <span class="muted">%s</span></p>'
                   % (escape(label(lang, "voltage_unbalance")), "" if unb is None else "%.2f" % unb,
                      "-" if unb is None else "%.1f %%" % unb, escape(label(lang, "unbalance_note"))))
    since, until = data["range"]
    series = []
    for k, m in enumerate(ms):
        colour = COLOURS.get(m["phase"] or "", CIRCUIT_COLOURS[k % len(CIRCUIT_COLOURS)])
        if m["hours"] is None:
            series.append(svg.Series("power-%d" % m["instance"], m["name"], colour,
                                     [(r[0], float(r[1]), bool(r[2])) for r in m["points"]]))
        else:
            series.append(svg.Series("power-%d" % m["instance"], m["name"], colour, means=[
                {"t": max(since, min(start + 1800, until)), "v": mean, "n": n, "b0": start, "b1": start + 3600}
                for start, n, _lo, _hi, mean in m["hours"] if n]))
    out.append('<h2 id="meter-power">%s</h2>' % escape(label(lang, "meter_power")))
    out.append(svg.time_plot(series, since, until, plot_id="plot-meter-power", unit="W", y_floor=0, **kw))
    supply = data["supply_wh"] or 0.0
    circuits = [m for m in ms if m["circuit"]]
    if circuits or phases:
        rows = []
        covered = 0.0
        for m in circuits:
            wh = m["wh"] or 0.0
            if not m["supply"]:
                covered += wh
            rows.append('<tr data-circuit="%s"><td>%s</td><td class="num">%.2f</td><td class="num">%s</td></tr>'
                        % (escape(m["circuit"]), escape(m["circuit"]), wh / 1000,
                           "%.0f %%" % (wh / supply * 100) if supply > 0 and not m["supply"] else "-"))
        rest = max(0.0, supply - covered)
        out.append('<h2 id="circuits">%s</h2>' % escape(label(lang, "by_circuit")))
        out.append('<table id="circuit-table"><tr><th>%s</th><th>kWh</th><th>%s</th></tr>%s'
                   '<tr data-circuit="(rest)"><td>%s</td><td class="num">%.2f</td><td class="num">%s</td></tr>'
                   '<tr class="total" data-circuit="(supply)"><td>%s</td><td class="num" id="supply-kwh">%.2f</td>'
                   '<td></td></tr></table>'
                   % (escape(label(lang, "circuit")), escape(label(lang, "share")), "".join(rows),
                      escape(label(lang, "rest_of_supply")), rest / 1000,
                      "%.0f %%" % (rest / supply * 100) if supply > 0 else "-",
                      escape(label(lang, "supply")), supply / 1000))
        out.append('<p class="note">%s</p>' % escape(label(lang, "supply_note")))
    return "".join(out)
