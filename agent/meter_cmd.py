"""`airwatt meter address`: give a PZEM-004T its Modbus address, through the board it is wired to.

Several meters share one bus only with an address each (1..247); a new meter answers the general address 0xF8
whatever its own. The technician connects ONE meter, runs `airwatt meter address --port P --from 248 --to 2`,
then the next one. Over the board's serial port (mpremote's transport, as `airwatt flash` uses) the command
stops the firmware, makes sure the driver is on the board, runs the driver's own address change on the
board's energy UART (wiring from its config.json), reads the address back from the new address, and restarts
the firmware. Through 0xF8 it first reads the address register: when more than one meter answers, their
answers collide on the wire and fail their CRC, and it refuses, changing nothing.
"""

from __future__ import annotations

import argparse
import ast
import sys

from airwatt.agent import flash_cmd
from airwatt.agent.flash_cmd import FlashError

GENERAL = 0xF8
DRIVER = "/lib/pzem004t.mpy"

# Runs on the board (raw REPL, firmware stopped). Prints one repr'd tuple: the outcome.
_SCRIPT = """
import asyncio, json, machine
import pzem004t
w = {'uart': 2, 'tx': 17, 'rx': 16}
try:
    with open('/config.json') as f:
        for s in json.load(f)['sensors']:
            if s['kind'] == 'energy':
                w = s
except Exception:
    pass
uart = machine.UART(w['uart'], baudrate=9600, tx=w['tx'], rx=w['rx'])
FROM, TO = %d, %d
async def who(addr, tries):
    m = pzem004t.PZEM004T(uart, addr=addr, timeout_ms=300)
    err = None
    for _ in range(tries):
        try:
            return ('at', await m.read_address())
        except OSError:
            return ('none', addr)
        except ValueError as e:
            err = str(e)
        await asyncio.sleep_ms(100)
    return ('garbled', err)
async def go():
    first = await who(FROM, 2)
    if first[0] != 'at':
        return first
    was = first[1]
    if was != TO:
        if FROM != TO:
            other = await who(TO, 1)
            if other[0] != 'none':
                return ('taken', TO)
        try:
            await pzem004t.PZEM004T(uart, addr=FROM, timeout_ms=300).set_address(TO)
        except (OSError, ValueError) as e:
            return ('refused', str(e) or type(e).__name__)
        await asyncio.sleep_ms(200)
    back = await who(TO, 2)
    return ('done', was, back[1] if back[0] == 'at' else None)
print(repr(asyncio.run(go())))
"""


def check_addresses(old: int, new: int) -> None:
    if not (1 <= old <= 247 or old == GENERAL):
        raise FlashError("--from is the meter's address now: 1..247, or 248 (0xF8, the general address every meter "
                         "answers when it is the only one on the bus), not %d" % old)
    if not 1 <= new <= 247:
        raise FlashError("--to is the meter's new address: 1..247, not %d" % new)


def verdict(outcome: tuple, old: int, new: int) -> str:
    """The technician's one line for the board's outcome; raises FlashError when the address was not set."""
    kind = outcome[0]
    if kind == "none":
        where = "the general address 248" if old == GENERAL else "address %d" % old
        raise FlashError("no meter answered on %s: check its wiring (TX/RX, 5 V) and that it has mains (the meter "
                         "is powered from the AC side)" % where)
    if kind == "garbled":
        if old == GENERAL:
            raise FlashError("more than one meter answers on the general address 248 (their answers collide: %s): "
                             "leave only the meter to address on the bus, and address the others one by one; "
                             "nothing was changed" % outcome[1])
        raise FlashError("the meter at %d answered garbled twice (%s): check the wiring; nothing was changed"
                         % (old, outcome[1]))
    if kind == "taken":
        raise FlashError("another meter already answers on address %d: choose a free address; nothing was changed"
                         % new)
    if kind == "refused":
        raise FlashError("the meter did not confirm the address change (%s)" % outcome[1])
    _, was, back = outcome
    if back != new:
        raise FlashError("the meter (address %d) took the command but reads back %s, not %d: run the command again"
                         % (was, back, new))
    if was == new:
        return "the meter already has address %d (read back)" % new
    return "meter address %d -> %d: read back %d from the new address" % (was, new, back)


def set_address(port: str, old: int, new: int, say=print) -> str:
    """Set the address of the meter answering `old` (248: the only meter on the bus) to `new` through the
    board on `port`; returns the verdict line. Raises FlashError saying what to do."""
    from mpremote.transport import TransportError

    check_addresses(old, new)
    flash_cmd.check_port(port)
    driver = {DRIVER: flash_cmd.firmware_image()[DRIVER]}
    transport = flash_cmd._connect(port)
    try:
        try:
            transport.enter_raw_repl(soft_reset=False, timeout_overall=5)
        except TransportError:
            raise FlashError("no MicroPython REPL answered on %s: is it the board's port?" % port) from None
        try:
            flash_cmd.sync_files(transport, driver, say)  # the board's own driver does the talking
            raw = transport.exec(_SCRIPT % (old, new))
            outcome = ast.literal_eval(raw.decode().strip().splitlines()[-1])
        except (TransportError, ValueError, SyntaxError, IndexError) as err:
            raise FlashError("the board could not run the address change (%s): check it with `airwatt console`"
                             % err) from None
        finally:
            flash_cmd.soft_reset(transport)  # the firmware goes back to reading its meters
    finally:
        transport.close()
    return verdict(outcome, old, new)


def _address_cmd(args: argparse.Namespace) -> int:
    try:
        print(set_address(args.port, args.from_addr, args.to_addr))
    except FlashError as err:
        print("airwatt meter address: %s" % err, file=sys.stderr)
        return 2
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    meter = commands.add_parser("meter", help="energy meters on a board's Modbus bus (technicians)")
    verbs = meter.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("address", help="set the Modbus address of the only meter on the bus, through the board",
                         description=__doc__.split("\n\n")[1])
    p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--from", dest="from_addr", type=int, default=GENERAL,
                   help="the meter's address now (default 248: the general address, one meter on the bus only)")
    p.add_argument("--to", dest="to_addr", type=int, required=True, help="its new address, 1..247")
    p.set_defaults(func=_address_cmd)
