# The self-test: one SELFTEST line per sensor from its first outcome, then the verdict (format in README.md).
# Runs at every boot beside the board's loops, and on demand from the REPL (board.selftest()) with the sampler in
# its one-shot mode. Boot-only code: the board imports it for the report and drops it afterwards.
import asyncio

import sampler
from protocol import fields, wire


def line(kind, outcome):
    """'SELFTEST <kind> PASS <metric>=<value> ...' or 'SELFTEST <kind> FAIL <reason>'."""
    if outcome is None:
        return "SELFTEST %s FAIL no reading in time" % kind
    ok, detail = outcome
    if not ok:
        return "SELFTEST %s FAIL %s" % (kind, detail)
    parts = []
    for row in fields.metrics(kind):
        if row[1] in detail:
            parts.append("%s=%s" % (row[1], wire.render(detail[row[1]], row[7])))
    return "SELFTEST %s PASS %s" % (kind, " ".join(parts) if parts else "(values out of range)")


def within_ms(cfg, sensors):
    """How long the self-test waits: selftest_s on top of the longest warm-up."""
    return cfg["selftest_s"] * 1000 + max([s.warmup_ms for s in sensors])


async def report(sensors, clock, within, log=print):
    """Print one SELFTEST line per sensor from its first outcome this boot, then the verdict."""
    start = clock.ms()
    done = []
    while len(done) < len(sensors) and clock.ms() - start < within:
        for s in sensors:
            if s.outcome is not None and s not in done:
                done.append(s)
                log(line(s.kind, s.outcome))
        await asyncio.sleep_ms(200)
    ok = True
    for s in sensors:
        if s not in done:
            log(line(s.kind, s.outcome))
        if s.outcome is None or not s.outcome[0]:
            ok = False
    log("SELFTEST " + ("PASS" if ok else "FAIL"))
    return ok


async def run(cfg, sensors, clock, boot, log=print):
    """Read every sensor once (the sampler's one-shot mode, nothing stored) and report; True when all pass."""
    smp = sampler.Sampler(sensors, None, clock, boot, log, once=True)

    async def sample():
        while True:
            await asyncio.sleep_ms(await smp.step())

    task = asyncio.create_task(sample())
    try:
        return await report(sensors, clock, within_ms(cfg, sensors), log)
    finally:
        task.cancel()
