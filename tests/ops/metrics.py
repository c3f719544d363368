"""Metric names in the Grafana dashboard and the alert rules (tests/ops and stack-test).

``./dev stack-test`` checks these names against what Prometheus really scraped and
writes that list to infra/monitoring/scraped-metrics.txt; tests/ops/test_deploy_files.py
checks the dashboard and the rules against the list.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "infra" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "previewvec.json"
SCRAPED = MONITORING / "scraped-metrics.txt"


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label sets, ranges and functions removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", expr))
    return {w for w in words if w.startswith(("flower_", "previewvec_", "redis_")) or w == "up"}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def scraped() -> set[str]:
    """The names the last stack-test scraped (empty if the file is missing)."""
    if not SCRAPED.is_file():
        return set()
    return {line.strip() for line in SCRAPED.read_text().splitlines()
            if line.strip() and not line.startswith("#")}
