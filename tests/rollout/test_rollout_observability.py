"""The controller's metrics, the Grafana dashboard and the alert rules.

Every series the dashboard and the alerts query must be exported by the service or the
controller (names taken from the real registries); with ``promtool`` installed, every PromQL
expression must parse.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cohortlens.rollout.controller import initial_status
from cohortlens.rollout.exporter import ControllerMetrics
from cohortlens.rollout.spec import parse_spec
from cohortlens.rollout.state import (
    AnalysisState,
    CheckState,
    Event,
    Hold,
    HoldReason,
    Phase,
    RolloutStatus,
)
from cohortlens.serve.metrics import ServiceMetrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docs" / "grafana" / "cohortlens.json"
ALERTS = REPO / "docs" / "prometheus" / "cohortlens-rollout-alerts.yml"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _paused_status() -> RolloutStatus:
    spec = parse_spec({"name": "r1", "candidate_model_id": 3})
    return initial_status(spec, T0).model_copy(
        update={
            "phase": Phase.PAUSED,
            "step_index": 3,
            "weight": 0.1,
            "hold": Hold(reason=HoldReason.INCONCLUSIVE, at=T0),
            "totals": {"successful": 7, "failed": 1, "inconclusive": 6, "error": 0},
            "analysis": AnalysisState(
                step_index=3,
                started_at=T0,
                interval_s=60,
                needs_baseline=False,
                window_start=T0,
                next_measurement_at=T0,
                checks={"err": CheckState(failures=1, consecutive_successes=2)},
            ),
        }
    )


def test_exporter_mirrors_status_and_counts_events() -> None:
    st = _paused_status()
    m = ControllerMetrics()
    events = [
        Event(
            "measurement",
            "failed",
            {"checks": {"err": {"outcome": "failed"}, "lat": {"outcome": "successful"}}},
        ),
        Event("paused", "inconclusive_limit_exceeded", {}),
    ]
    m.update(st, events, n_steps=6, at=1234.5)
    m.set_lease("r1", True)
    v = _values(m.render().decode())
    assert v[("cohortlens_rollout_phase", (("phase", "Paused"), ("rollout", "r1")))] == 1.0
    assert v[("cohortlens_rollout_phase", (("phase", "Progressing"), ("rollout", "r1")))] == 0.0
    assert v[("cohortlens_rollout_step", (("rollout", "r1"),))] == 3.0
    assert v[("cohortlens_rollout_steps", (("rollout", "r1"),))] == 6.0
    assert v[("cohortlens_rollout_weight", (("rollout", "r1"),))] == 0.1
    assert (
        v[
            (
                "cohortlens_rollout_held",
                (("reason", "inconclusive_limit_exceeded"), ("rollout", "r1")),
            )
        ]
        == 1.0
    )
    assert v[("cohortlens_rollout_held", (("reason", "manual"), ("rollout", "r1")))] == 0.0
    assert (
        v[("cohortlens_rollout_measurement_outcomes", (("outcome", "failed"), ("rollout", "r1")))]
        == 1.0
    )
    assert v[("cohortlens_rollout_check_failures", (("check", "err"), ("rollout", "r1")))] == 1.0
    assert (
        v[("cohortlens_rollout_check_consecutive_successes", (("check", "err"), ("rollout", "r1")))]
        == 2.0
    )
    key = (
        "cohortlens_rollout_measurements_total",
        (("check", "err"), ("outcome", "failed"), ("rollout", "r1")),
    )
    assert v[key] == 1.0
    assert (
        v[
            (
                "cohortlens_rollout_events_total",
                (("kind", "paused"), ("reason", "inconclusive_limit_exceeded"), ("rollout", "r1")),
            )
        ]
        == 1.0
    )
    assert v[("cohortlens_rollout_lease_held", (("rollout", "r1"),))] == 1.0
    assert v[("cohortlens_rollout_last_tick_timestamp_seconds", (("rollout", "r1"),))] == 1234.5


def _exported_names() -> set[str]:
    """Sample names of the service's and the controller's registries."""
    svc = ServiceMetrics()
    svc.observe("/r", "GET", 200, "candidate", "2", 0.01)
    svc.model_failures.labels("candidate", "2").inc()
    svc.set_routing(3, 0.1, 1, 2)
    ctrl = ControllerMetrics()
    ctrl.update(
        _paused_status(),
        [
            Event(
                "measurement",
                "ok",
                {"checks": {"c": {"outcome": "successful", "by_version": {"candidate": 0.1}}}},
            ),
            Event("aborted", "failure_limit_exceeded", {"duration_s": 300.0}),
        ],
        n_steps=1,
        at=0,
        counters={"aborted": 1},
    )
    ctrl.set_lease("r1", True)
    ctrl.notification("r1", "failed")
    names = set()
    for text in (svc.render().decode(), ctrl.render().decode()):
        for fam in text_string_to_metric_families(text):
            names |= {s.name for s in fam.samples}
    return names


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    return exprs


def _alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


_SERIES = re.compile(r"\b(cohortlens_[a-z_]+)\b")


def test_dashboard_and_alerts_query_only_exported_series() -> None:
    names = _exported_names()
    for expr in _dashboard_exprs() + _alert_exprs():
        for series in _SERIES.findall(expr):
            assert series in names, f"{series} (in {expr!r}) is not exported"


def test_dashboard_covers_service_and_rollout() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "cohortlens-rollout"
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "job", "rollout"}
    text = " ".join(_dashboard_exprs())
    for series in (
        "cohortlens_http_requests_total",
        "cohortlens_model_failures_total",
        "cohortlens_http_request_duration_seconds_bucket",
        "cohortlens_routing_weight",
        "cohortlens_rollout_phase",
        "cohortlens_rollout_step",
        "cohortlens_rollout_weight",
        "cohortlens_rollout_measurements_total",
        "cohortlens_rollout_check_failures",
        "cohortlens_rollout_traffic_weight",
        "cohortlens_rollout_check_value",
        "cohortlens_rollout_duration_seconds_bucket",
        "cohortlens_rollout_completed_total",
        "cohortlens_rollout_aborted_total",
        "cohortlens_rollout_candidate_ready",
    ):
        assert series in text
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_promql_parses_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus')")
    r = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rules = []
    for i, expr in enumerate(_dashboard_exprs()):
        concrete = (
            expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$rollout", ".*")
        )
        rules.append({"record": f"dashboard:panel_{i}", "expr": concrete})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
