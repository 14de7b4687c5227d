"""Firmware over real HTTP: the fleet page shows each board's version and the rollout's progress, halting it
needs the operator token; the boards' endpoints answer only signed requests for the release offered to them,
sign the manifest with the board's key and serve chunks that fit its heap."""

from __future__ import annotations

import hashlib
import hmac
import json

import aiohttp

from airwatt.agent import firmware, store
from pages_fixture import TOKEN


def signed(key: bytes, device: str, path: str) -> dict:
    return {"X-AirWatt-Device": device,
            "X-AirWatt-Signature": hmac.new(key, ("GET " + path).encode(), hashlib.sha256).hexdigest()}


async def test_fleet_page_rollout_progress_and_halt(agent):
    base, data_dir, _ = agent
    db = store.open_db(data_dir)
    firmware.build(db, "0.3.0")
    firmware.rollout(db, "0.3.0", ["hall-01", "hall-02"], canary=1)
    key = store.device_key(db, "hall-01")
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/fleet?lang=en") as r:
            text = await r.text()
        assert "Firmware rollout 0.3.0" in text and "pending 2" in text and 'id="halt-form"' in text
        assert "0.1.0 → 0.3.0 pending" in text

        # The board's manifest: signed with its own key, its id inside; chunks of at most 1 KB.
        path = "/v1/firmware/0.3.0/manifest"
        async with http.get(base + path, headers=signed(key, "hall-01", path)) as r:
            body = await r.read()
            assert r.status == 200, body
            assert r.headers["X-AirWatt-Signature"] == hmac.new(key, body, hashlib.sha256).hexdigest()
        manifest = json.loads(body)
        assert manifest["device"] == "hall-01" and manifest["version"] == "0.3.0"
        name, size, sha = next(f for f in manifest["files"] if f[0] == "board.mpy")
        data = b""
        while len(data) < size:
            path = "/v1/firmware/0.3.0/file?path=%s&offset=%d&length=%d" % (name, len(data), min(1024, size - len(data)))
            async with http.get(base + path, headers=signed(key, "hall-01", path)) as r:
                assert r.status == 200
                data += await r.read()
        assert hashlib.sha256(data).hexdigest() == sha
        for headers, path, status, said in [
            (signed(b"x" * 32, "hall-01", "/v1/firmware/0.3.0/manifest"), "/v1/firmware/0.3.0/manifest", 401,
             "unauthorized"),
            (signed(key, "hall-01", "/v1/firmware/0.2.0/manifest"), "/v1/firmware/0.2.0/manifest", 404,
             "not offered to hall-01"),
            (signed(key, "hall-01", "/v1/firmware/0.3.0/file?path=board.mpy&offset=0&length=4096"),
             "/v1/firmware/0.3.0/file?path=board.mpy&offset=0&length=4096", 400, "length 1..1024"),
            (signed(key, "hall-01", "/v1/firmware/0.3.0/file?path=nope.mpy&offset=0&length=10"),
             "/v1/firmware/0.3.0/file?path=nope.mpy&offset=0&length=10", 404, "no file nope.mpy"),
        ]:
            async with http.get(base + path, headers=headers) as r:
                assert r.status == status and said in await r.text(), (path, r.status, await r.text())

        # Halting needs the token (and the agent's own page as Origin); then no board is offered anything.
        page = {"Origin": base}
        for data, headers, status in [({"rollout": "1", "token": TOKEN}, {"Origin": "http://evil.example"}, 403),
                                      ({"rollout": "1"}, page, 403), ({"rollout": "1", "token": "no" * 10}, page, 403),
                                      ({"rollout": "x", "token": TOKEN}, page, 400),
                                      ({"rollout": "9", "token": TOKEN}, page, 404)]:
            async with http.post(base + "/firmware/halt", data=data, headers=headers, allow_redirects=False) as r:
                assert r.status == status, (data, await r.text())
        assert firmware.progress(db)["halted"] is None
        async with http.post(base + "/firmware/halt?lang=en", data={"rollout": "1", "token": TOKEN}, headers=page) as r:
            text = await r.text()
        assert 'id="rollout-halted"' in text and "halted by the operator" in text and "halt-form" not in text
        assert [r["state"] for r in firmware.status(db) if r["device"] in ("hall-01", "hall-02")] == ["halted"] * 2
        path = "/v1/firmware/0.3.0/manifest"
        async with http.get(base + path, headers=signed(key, "hall-01", path)) as r:
            assert r.status == 404
