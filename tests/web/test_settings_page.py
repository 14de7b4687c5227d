"""The device page's board settings over real HTTP: shown with rev, state and who set what; the form needs the
operator token, refuses posts not from the agent's own pages and bad values with a clear 4xx, and a good post makes a pending rev."""

from __future__ import annotations

import aiohttp

from airwatt.agent import device_settings, store
from pages_fixture import TOKEN

GOOD = {"int_energy": "10", "int_co2": "30", "int_pm": "", "upload_s": "60", "asc": "off", "temp_offset": "4.5",
        "frc": "420", "operator": "Somchai"}


async def test_settings_form_round_trip(agent):
    base, data_dir, _ = agent
    url = base + "/device/hall-01/settings?lang=en"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/device/hall-01?lang=en") as r:
            text = await r.text()
        assert 'id="settings-form"' in text and "no settings from the agent yet" in text
        # another site's page, no Origin/Referer at all, no token, a wrong one, no operator name, a bad number,
        # a value out of range
        page = {"Origin": base}
        for data, headers, status, said in [
            (dict(GOOD, token=TOKEN), {"Origin": "http://evil.example"}, 403, "agent's own pages"),
            (dict(GOOD, token=TOKEN), {"Referer": "http://evil.example/page"}, 403, "agent's own pages"),
            (dict(GOOD, token=TOKEN), {}, 403, "agent's own pages"),
            (GOOD, page, 403, "operator token required"),
            (dict(GOOD, token="nope" * 5), page, 403, "operator token required"),
            (dict(GOOD, token=TOKEN, operator=" "), page, 400, "operator: give your name"),
            (dict(GOOD, token=TOKEN, upload_s="soon"), page, 400, "upload_s: 'soon' is not a whole number"),
            (dict(GOOD, token=TOKEN, int_pm="2"), page, 400, "settings.intervals.pm"),
            (dict(GOOD, token=TOKEN, asc="maybe"), page, 400, "co2.asc: on or off"),
            (dict(GOOD, token=TOKEN, temp_offset="nan"), page, 400, "temp_offset"),
        ]:
            async with http.post(url, data=data, headers=headers, allow_redirects=False) as r:
                assert r.status == status and said in await r.text(), (data, headers, await r.text())
        db = store.open_db(data_dir)
        assert device_settings.state(db, "hall-01") is None  # nothing refused was kept
        async with http.post(base + "/device/nope/settings", data=dict(GOOD, token=TOKEN), headers=page) as r:
            assert r.status == 404
        # from the agent's own page: accepted, pending, and shown with who set it
        async with http.post(url, data=dict(GOOD, token=TOKEN), headers={"Origin": base},
                             allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/device/hall-01?settings=ok&lang=en#board-settings"
        got = device_settings.state(db, "hall-01")
        assert got["rev"] == 1 and got["state"] == "pending" and got["frc_pending"] == 420
        assert got["settings"] == {"intervals": {"energy": 10, "co2": 30}, "upload_s": 60,
                                   "co2": {"asc": False, "temp_offset": 4.5}}
        assert got["changed"]["co2.asc"]["by"] == "Somchai"
        async with http.get(base + "/device/hall-01?lang=en&settings=ok") as r:
            text = await r.text()
        assert "rev 1: pending" in text and "Somchai" in text and "forced recalibration to 420 ppm: pending" in text
        assert 'id="settings-ok"' in text
