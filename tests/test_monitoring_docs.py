"""The example alert rules load and read only metrics the README documents; the README quotes
them as shipped (``promtool`` is not on the machine, so the rules are checked as YAML)."""

from __future__ import annotations

import re

from tests.support.monitoring import documented_metrics, readme_rules, shipped_rules

SERIES_SUFFIXES = ("_bucket", "_count", "_sum")


def metrics_in(expr: str) -> set[str]:
    """The metric families an expression reads (a histogram's series by its family name)."""
    names = set(re.findall(r"\bcourier_[a-z_]+", expr))
    return {next((n.removesuffix(s) for s in SERIES_SUFFIXES if n.endswith(s)), n) for n in names}


def test_every_alert_is_complete_and_reads_documented_metrics() -> None:
    rules = shipped_rules()
    assert set(rules) == {
        "CourierDestinationHeld",
        "CourierQueueBacklog",
        "CourierDeadLetters",
        "CourierChannelSilent",
    }
    documented = documented_metrics()
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"], name
        used = metrics_in(rule["expr"])
        assert used, f"{name} reads no Courier metric"
        assert used <= documented, f"{name} reads undocumented {sorted(used - documented)}"


def test_held_alert_waits_ten_minutes_and_silent_channel_only_in_working_hours() -> None:
    rules = shipped_rules()
    assert rules["CourierDestinationHeld"]["for"] == "10m"
    silent = rules["CourierChannelSilent"]["expr"]
    assert "hour()" in silent and "day_of_week()" in silent


def test_the_readme_quotes_the_shipped_rules() -> None:
    shipped = shipped_rules()
    for rule in readme_rules():
        assert {k: shipped[rule["alert"]][k] for k in rule} == rule
