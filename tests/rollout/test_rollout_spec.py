"""The rollout spec: defaults, YAML, and errors that name the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from cohortlens.errors import InputError
from cohortlens.rollout.spec import (
    AnalysisStep,
    PauseStep,
    SetWeightStep,
    dump_spec_yaml,
    load_spec,
    parse_spec,
    spec_hash,
)


def _base(**extra: Any) -> dict[str, Any]:
    return {"name": "model-7", "candidate_model_id": 7, **extra}


def test_default_spec_is_canary_ramp_full() -> None:
    spec = parse_spec(_base())
    weights = [s.set_weight for s in spec.steps if isinstance(s, SetWeightStep)]
    assert weights == [1, 10, 100]
    kinds = [s.kind for s in spec.steps]
    assert kinds == ["set_weight", "analysis", "set_weight", "analysis", "set_weight", "analysis"]
    assert [c.name for c in spec.checks] == [
        "candidate-error-rate",
        "candidate-p99-latency",
        "errors-vs-stable",
        "latency-vs-stable",
        "completion-guardrail",
    ]
    # The 100 % bake runs absolute checks only (no stable traffic to compare with).
    assert [c.name for c in spec.step_checks(5)] == [
        "candidate-error-rate",
        "candidate-p99-latency",
    ]
    assert spec.weight_at(1) == 0.01
    assert spec.weight_at(3) == 0.1
    assert spec.weight_at(5) == 1.0
    assert spec.analysis.interval_s == 60.0
    assert spec.analysis.on_error == "abort"


def test_rollback_bound_formula() -> None:
    spec = parse_spec(
        _base(
            analysis={"interval_s": 30, "error_retry_interval_s": 5},
            checks=[
                {"type": "error_rate", "name": "err", "max_error_rate": 0.01, "failure_limit": 2},
                {
                    "type": "latency",
                    "name": "lat",
                    "max_latency_s": 0.2,
                    "consecutive_error_limit": 10,
                },
                {
                    "type": "latency",
                    "name": "dry",
                    "max_latency_s": 0.2,
                    "failure_limit": 50,
                    "dry_run": True,
                },
            ],
            steps=[{"set_weight": 5}, {"analysis": {}}],
        )
    )
    # failures: 30 * (2 + 1) + 30 = 120; errors: 30 + 5 * 10 = 80; dry-run ignored.
    assert spec.rollback_bound_s(1) == 120.0
    assert spec.rollback_bound_s(0) == 0.0


def test_yaml_round_trip_and_hash(tmp_path: Path) -> None:
    spec = parse_spec(
        _base(
            steps=[
                {"set_weight": 2},
                {"pause": {"duration_s": 60}},
                {"analysis": {"interval_s": 10}},
            ]
        )
    )
    path = tmp_path / "spec.yaml"
    path.write_text(dump_spec_yaml(spec))
    again = load_spec(path)
    assert again == spec
    assert again.spec_hash() == spec_hash(spec.to_json_dict())
    assert isinstance(again.steps[1], PauseStep)
    assert isinstance(again.steps[2], AnalysisStep)
    assert again.step_interval_s(2) == 10.0


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (
            _base(steps=[{"set_weight": 150}]),
            "steps[0].set_weight: Input should be less than or equal to 100",
        ),
        (
            _base(steps=[{"set_weight": 5}, {"pause": {"duration": 3}}]),
            "steps[1].pause.duration: Extra inputs",
        ),
        (
            _base(steps=[{"set_weight": 5, "pause": {}}]),
            "steps[0]: a step is a mapping with exactly one key",
        ),
        (_base(steps=[{"wait": 5}]), "steps[0]: a step is a mapping with exactly one key"),
        (
            _base(checks=[{"type": "error_rate", "name": "e", "max_error_rate": 2}]),
            "checks[0].max_error_rate: Input should be less than or equal to 1",
        ),
        (_base(checks=[{"type": "nope", "name": "e"}]), "checks[0]: Input tag 'nope'"),
        (
            _base(candidate_model_id=0),
            "candidate_model_id: Input should be greater than or equal to 1",
        ),
        (_base(name="Bad Name"), "name: String should match pattern"),
        (
            _base(analysis={"on_error": "ignore"}),
            "analysis.on_error: Input should be 'abort' or 'pause'",
        ),
        (_base(router={"kind": "admin_api"}), "router.url: Field required"),
        (
            _base(metrics={"kind": "prometheus", "url": "ftp://x"}),
            "metrics.url: String should match pattern",
        ),
        (
            _base(steps=[{"set_weight": 10}, {"set_weight": 5}]),
            "steps[1].set_weight: 5 is below the earlier 10",
        ),
        (
            _base(steps=[{"set_weight": 10}, {"analysis": {"checks": ["nope"]}}]),
            "steps[1].analysis.checks: unknown check(s) nope",
        ),
        (
            _base(steps=[{"analysis": {}}]),
            "steps[0].analysis: the candidate has 0 % of traffic here",
        ),
        (
            _base(steps=[{"set_weight": 100}, {"analysis": {"checks": ["latency-vs-stable"]}}]),
            "latency-vs-stable compare with the stable version",
        ),
        (
            _base(
                checks=[
                    {"type": "latency", "name": "a", "max_latency_s": 1},
                    {"type": "latency", "name": "a", "max_latency_s": 2},
                ]
            ),
            "checks: names must be unique, repeated: a",
        ),
        (_base(extra_field=1), "extra_field: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_field(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_spec(data, source="spec.yaml")
    assert str(exc.value).startswith("spec.yaml: ")
    assert needle in str(exc.value)


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected a mapping of rollout fields, got list"):
        parse_spec([1, 2])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(InputError, match="cannot read the rollout spec"):
        load_spec(tmp_path / "missing.yaml")


@given(st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5) | st.none())
def test_any_bad_weight_is_reported_at_its_path(value: Any) -> None:
    data = _base(steps=[{"set_weight": 1}, {"set_weight": value}])
    ok = isinstance(value, float) and 1.0 <= value <= 100.0
    if ok:
        assert parse_spec(data).steps[1].set_weight == value
        return
    numeric_in_range = False
    if isinstance(value, str):  # pydantic's lax mode accepts numeric strings
        try:
            numeric_in_range = 1.0 <= float(value) <= 100.0
        except ValueError:
            numeric_in_range = False
    if numeric_in_range:
        assert parse_spec(data).steps[1].set_weight == float(value)
        return
    with pytest.raises(InputError, match=r"steps\[1\]\.set_weight"):
        parse_spec(data)


def test_spec_yaml_from_docs_parses() -> None:
    text = """
name: cohort-model-v8
candidate_model_id: 8
router: {kind: admin_api, url: "http://127.0.0.1:8000"}
metrics: {kind: service, urls: ["http://127.0.0.1:8000/metrics"]}
analysis: {interval_s: 30, on_error: pause}
steps:
  - set_weight: 1
  - analysis: {}
  - set_weight: 10
  - pause: {duration_s: 600}
  - analysis: {}
  - set_weight: 100
  - pause: {}
"""
    spec = parse_spec(yaml.safe_load(text))
    assert spec.router.kind == "admin_api"
    assert spec.analysis.on_error == "pause"
    assert spec.steps[6].pause.duration_s is None
