"""Energy meters of a board: several PZEM-004T on one Modbus bus, each a phase (L1, L2, L3) or a sub-circuit.

A meter's readings carry its Modbus address as their sensor instance (protocol v2). The board's config.json
lists the meters (`airwatt flash --three-phase` or `--meters "1:L1,2:L2,3:L3,4:aircon"`); the flash command
keeps the same list here, in the `meters` table, so the agent knows which instance is which phase or circuit
and which meters the site's incoming supply flows through: only those count in its kWh and carbon (a
sub-circuit's energy is already inside the supply's). A board without a meters row has one meter, instance 0,
and it is the supply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlite_utils

from airwatt.firmware import config as board_rules

PHASES = board_rules.PHASES
THREE_PHASE = "1:L1,2:L2,3:L3"


def parse(text: str, supply: str | None = None) -> list[dict]:
    """"1:L1,2:L2,3:L3,4:aircon" -> the board config's meters (address: a phase, or a circuit's name); `supply`
    "1,2,3" names the addresses the incoming supply flows through (default: the phase meters, or a lone meter).
    Raises ValueError saying what is wrong."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        addr, colon, label = item.partition(":")
        if not colon or not addr.strip().isdigit() or not label.strip():
            raise ValueError("--meters takes ADDRESS:PHASE-OR-CIRCUIT[,...], e.g. \"1:L1,2:L2,3:L3,4:aircon\", "
                             "not %r" % item)
        label = label.strip()
        m: dict = {"addr": int(addr), "name": label}
        m["phase" if label in PHASES else "circuit"] = label
        out.append(m)
    if supply is not None:
        wanted = {int(a) for a in supply.split(",") if a.strip().isdigit()}
        unknown = wanted - {m["addr"] for m in out}
        if unknown or not wanted:
            raise ValueError("--supply names meter addresses from --meters (e.g. 1,2,3), not %r" % supply)
        for m in out:
            m["supply"] = m["addr"] in wanted
    try:
        return board_rules.meters(out, "meters")
    except board_rules.ConfigError as err:
        raise ValueError(str(err).replace("config.json: ", "--")) from None


def set_meters(db: sqlite_utils.Database, device: str, meters: Iterable[Mapping]) -> None:
    """Replace a board's meters (as the board config lists them, checked)."""
    with db.conn:
        db.execute("DELETE FROM meters WHERE device = ?", (device,))
        db.conn.executemany(
            "INSERT INTO meters(device, instance, name, phase, circuit, supply) VALUES (?, ?, ?, ?, ?, ?)",
            [(device, m["addr"], m["name"], m.get("phase"), m.get("circuit"), int(bool(m["supply"])))
             for m in meters])


def of_device(db: sqlite_utils.Database | object, device: str) -> list[dict]:
    """A board's meters, by address: {instance, name, phase, circuit, supply}; [] for a board with one."""
    cur = db.execute("SELECT instance, name, phase, circuit, supply FROM meters WHERE device = ? ORDER BY instance",
                     (device,))
    return [dict(zip(("instance", "name", "phase", "circuit", "supply"), r)) for r in cur.fetchall()]


def by_device(db: sqlite_utils.Database | object) -> dict[str, dict[int, dict]]:
    """Every board's meters: device -> instance -> meter."""
    out: dict[str, dict[int, dict]] = {}
    for device, inst, name, phase, circuit, supply in db.execute(
            "SELECT device, instance, name, phase, circuit, supply FROM meters"):
        out.setdefault(device, {})[inst] = {"instance": inst, "name": name, "phase": phase, "circuit": circuit,
                                            "supply": bool(supply)}
    return out


def is_supply(meters: Mapping[int, Mapping] | None, instance: int) -> bool:
    """Does this meter's energy count as the site's supply? A board without meters has one: instance 0."""
    if not meters:
        return instance == 0
    m = meters.get(instance)
    return bool(m and m["supply"])


def supply_power(db: sqlite_utils.Database | object, device: str, since: float, now: float, good_sql: str
                 ) -> float | None | bool:
    """The power through the supply now: the sum of each supply meter's newest good reading in (since, now];
    None when none has one; False for a board with one meter (the caller reads its readings as before)."""
    supply = [inst for (inst,) in db.execute("SELECT instance FROM meters WHERE device = ? AND supply = 1",
                                              (device,)).fetchall()]
    if not supply:
        return False
    got = []
    for inst in supply:
        row = db.execute("SELECT power FROM readings WHERE device = ? AND instance = ? AND t > ? AND t <= ? AND"
                         " power IS NOT NULL AND " + good_sql + " ORDER BY t DESC LIMIT 1",
                         (device, inst, since, now)).fetchone()
        if row is not None:
            got.append(float(row[0]))
    return sum(got) if got else None
