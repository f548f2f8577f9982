"""What the README's "Monitoring" section documents: the metric names, and the alert examples."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"


def monitoring_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("\n## Monitoring\n", 1)[1].split("\n## ", 1)[0]


def documented_metrics() -> set[str]:
    """The first column of the metric table, as the exposition names them (a counter with
    ``_total``, a histogram by its family name)."""
    return set(re.findall(r"^\| `(courier_[a-z_]+)` \|", monitoring_section(), re.MULTILINE))


def shipped_rules() -> dict[str, dict]:
    """contrib/prometheus/alerts.yml's rules by alert name."""
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def readme_rules() -> list[dict]:
    """The alert rules the README quotes."""
    [block] = re.findall(r"```yaml\n(.*?)\n```", monitoring_section(), re.DOTALL)
    return yaml.safe_load(block)
