"""`airwatt bench sync` runs end to end on a small store (figures only: no speed is asserted)."""

from __future__ import annotations

from airwatt.agent.bench import sync as bench_sync
from airwatt.agent.cli import main


def test_bench_drains_every_reading_and_reports_both_rates():
    result = bench_sync.run_sync(n=300, kind="http-json", batch=50)
    assert result["readings"] == 300 and result["platform_writes"] == 300  # checked against the platform's file
    assert result["drain_per_s"] > 0 and result["raw_one_tx_per_s"] > 0
    text = bench_sync.format_sync(result)
    assert "sync drain" in text and "raw executemany, ONE transaction" in text and "ratio" in text


def test_bench_verb_is_wired(capsys):
    assert main(["bench", "sync", "--readings", "120", "--kind", "ngsi-ld", "--batch", "40"]) == 0
    out = capsys.readouterr().out
    assert "sync bench (ngsi-ld): 120 readings in batches of 40" in out


def test_bench_against_the_real_servers_checks_what_arrived(capsys):
    """`--kind sensorthings|mqtt` start a real server for the run and check it holds every reading."""
    assert main(["bench", "sync", "--readings", "200", "--kind", "mqtt", "--batch", "50"]) == 0
    out = capsys.readouterr().out
    assert "to a real mosquitto" in out and "subscriber got 200 of 200 readings" in out and "raw executemany" in out
    result = bench_sync.run_real(n=200, kind="sensorthings", batch=50, devices=2)
    assert result["readings"] == 200 - result["warmup"] and result["warmup"] == 3 * 2
    assert "server holds %d Observations" % result["platform_writes"] in result["check"]
