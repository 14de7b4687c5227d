"""The fleet page's firmware part: each board's version and update state, the latest rollout's progress, and
the form that halts it (operator token, like every action on these pages)."""

from __future__ import annotations

from html import escape

from aiohttp import web

from .. import firmware
from . import params
from .i18n import label
from .layout import FORM_TIMEOUT_KEY, WRITE_DB_KEY, _lang, _url, authorised


def cell(running: str | None, fw: dict | None) -> str:
    """A board's firmware column: what it runs, and where an update towards another version stands."""
    text = running or "-"
    if fw and fw["target"] and (fw["state"] != "confirmed" or fw["target"] != running):
        text += " → %s %s" % (fw["target"], fw["state"])
    return text


def rollout_box(lang: str, progress: dict | None, action: str) -> str:
    """The latest rollout: version, boards per state, halted or the halt form."""
    if progress is None:
        return ""
    states = ", ".join("%s %d" % (s, n) for s, n in sorted(progress["states"].items())) or "-"
    out = ['<div id="rollout"><h2>%s %s</h2><p id="rollout-states">%s</p>' % (
        escape(label(lang, "rollout")), escape(progress["version"]), escape(states))]
    if progress["halted"] is not None:
        out.append('<p class="err" id="rollout-halted">%s: %s</p>' % (escape(label(lang, "rollout_halted")),
                                                                      escape(progress["halted_why"])))
    else:
        out.append('<form method="post" action="%s" id="halt-form"><input type="hidden" name="rollout" value="%d">'
                   '%s: <input type="password" name="token" id="halt-token" autocomplete="current-password"> '
                   '<button type="submit" id="halt-send">%s</button></form>'
                   % (escape(action), progress["rollout"], escape(label(lang, "operator_token")),
                      escape(label(lang, "halt_rollout"))))
    out.append("</div>")
    return "".join(out)


async def halt_post(request: web.Request) -> web.Response:
    """POST /firmware/halt: stop the rollout (operator token); the boards not yet updated are left alone."""
    form = await params.form(request, request.app[FORM_TIMEOUT_KEY])  # Origin/Referer: checked by security.py
    if not authorised(request, form):
        raise web.HTTPForbidden(text="operator token required")
    try:
        rollout = int(str(form.get("rollout", "")))
    except ValueError:
        raise web.HTTPBadRequest(text="rollout: give the rollout's number") from None
    db = request.app[WRITE_DB_KEY]
    if db.execute("SELECT 1 FROM firmware_rollouts WHERE id = ?", (rollout,)).fetchone() is None:
        raise web.HTTPNotFound(text="no rollout %d" % rollout)
    firmware.halt(db, rollout, "halted by the operator")
    raise web.HTTPSeeOther(_url("/fleet", _lang(request)) + "#rollout")


def setup(app: web.Application) -> None:
    app.router.add_post("/firmware/halt", halt_post)
