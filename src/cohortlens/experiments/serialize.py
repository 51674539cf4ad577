"""The JSON file of sufficient statistics (format ``cohortlens/experiment-stats``, version 1).

Specified in docs/EXPERIMENTS.md. In short::

    {
      "format": "cohortlens/experiment-stats", "version": 1,
      "experiment": "onboarding-v2",                      (optional)
      "control": "control",                                (optional)
      "expected_weights": {"control": 1, "treatment": 1},  (optional; default equal)
      "metrics": [
        {"name": "completed", "type": "binary"},
        {"name": "revenue", "type": "mean", "covariate": "pre_revenue", "cap_quantile": 0.99},
        {"name": "revenue_per_event", "type": "ratio", "numerator": "revenue",
         "denominator": "events", "role": "guardrail", "lower_is_better": false}
      ],
      "periods": [
        {"label": "2025-01-06",
         "units": {"control": 1000, "treatment": 1003},
         "stats": {"completed": {"control": {"n": 1000, "sum_y": 312}, "treatment": {...}},
                   "revenue": {"control": {"n": 1000, "sum_y": ..., "sum_yy": ...,
                                            "sum_x": ..., "sum_xx": ..., "sum_xy": ...}}}}
      ]
    }

A single-period file may put ``units`` and ``stats`` at the top level instead of ``periods``.
Periods hold *increments* (what happened in that period); the analysis sums them, and the
sequential analysis accumulates them look by look.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cohortlens.experiments.errors import ExperimentInputError
from cohortlens.experiments.kinds import MetricKind, kind_of
from cohortlens.experiments.spec import MetricRole, MetricSpec
from cohortlens.experiments.stats import ExperimentStats, SufficientStats

FORMAT = "cohortlens/experiment-stats"
VERSION = 1

_METRIC_KEYS = {
    "name",
    "type",
    "numerator",
    "denominator",
    "covariate_denominator",
    "covariate",
    "cap_quantile",
    "role",
    "lower_is_better",
}
_TOP_KEYS = {
    "format",
    "version",
    "experiment",
    "control",
    "expected_weights",
    "metrics",
    "periods",
    "units",
    "stats",
}


@dataclass(frozen=True)
class StatsFile:
    """The content of a statistics file.

    Attributes:
        metrics: metric definitions, in file order.
        periods: statistics per period (increments), in time order.
        control: the control variant, if the file names it.
        expected_weights: the design split, if the file gives it.
        experiment: the experiment's name, if given.
    """

    metrics: tuple[MetricSpec, ...]
    periods: tuple[ExperimentStats, ...]
    control: str | None = None
    expected_weights: Mapping[str, float] | None = None
    experiment: str | None = None


def parse_stats_document(doc: object) -> StatsFile:
    """Validate and convert a decoded JSON document (also used by the HTTP service).

    Raises:
        ExperimentInputError: with the JSON path of the first problem found.
    """
    if not isinstance(doc, Mapping):
        raise ExperimentInputError("the statistics document must be a JSON object")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ExperimentInputError(f"unknown top-level key(s) {', '.join(unknown)}")
    if doc.get("format", FORMAT) != FORMAT:
        raise ExperimentInputError(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("version", VERSION) != VERSION:
        raise ExperimentInputError(
            f"version {doc.get('version')!r} is not supported (this release reads {VERSION})"
        )
    metrics = _parse_metrics(doc.get("metrics"))
    if "periods" in doc:
        if "units" in doc or "stats" in doc:
            raise ExperimentInputError(
                "give either 'periods' or top-level 'units'/'stats', not both"
            )
        raw_periods = doc["periods"]
        if not isinstance(raw_periods, list) or not raw_periods:
            raise ExperimentInputError("'periods' must be a non-empty list")
    else:
        raw_periods = [{"units": doc.get("units"), "stats": doc.get("stats")}]
    periods = tuple(_parse_period(p, metrics, f"periods[{i}]") for i, p in enumerate(raw_periods))
    weights = doc.get("expected_weights")
    if weights is not None and (
        not isinstance(weights, Mapping)
        or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in weights.values())
    ):
        raise ExperimentInputError("'expected_weights' must map variant names to numbers")
    control = doc.get("control")
    if control is not None and not isinstance(control, str):
        raise ExperimentInputError("'control' must be a string")
    return StatsFile(
        metrics=metrics,
        periods=periods,
        control=control,
        expected_weights=None
        if weights is None
        else {str(k): float(v) for k, v in weights.items()},
        experiment=doc.get("experiment"),
    )


def read_stats_json(path: str | Path) -> StatsFile:
    """Read and validate a statistics file.

    Raises:
        ExperimentInputError: unreadable file, invalid JSON, or an invalid document.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExperimentInputError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExperimentInputError(
            f"{p}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    try:
        return parse_stats_document(doc)
    except ExperimentInputError as exc:
        raise ExperimentInputError(f"{p}: {exc}") from exc


def stats_document(content: StatsFile) -> dict[str, Any]:
    """The JSON document of ``content`` (inverse of :func:`parse_stats_document`)."""
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if content.experiment is not None:
        doc["experiment"] = content.experiment
    if content.control is not None:
        doc["control"] = content.control
    if content.expected_weights is not None:
        doc["expected_weights"] = dict(content.expected_weights)
    doc["metrics"] = [_metric_dict(m) for m in content.metrics]
    doc["periods"] = [
        {
            "label": p.label,
            "units": dict(p.units),
            "stats": {
                m: {v: s.to_dict() for v, s in arms.items()} for m, arms in p.metrics.items()
            },
        }
        for p in content.periods
    ]
    return doc


def write_stats_json(content: StatsFile, path: str | Path) -> None:
    """Write ``content`` as a statistics file (indented, stable key order)."""
    Path(path).write_text(json.dumps(stats_document(content), indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- parsing


def _metric_dict(m: MetricSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"name": m.name, "type": m.kind.value}
    for key, value in (
        ("numerator", m.numerator),
        ("denominator", m.denominator),
        ("covariate", m.covariate),
        ("covariate_denominator", m.covariate_denominator),
        ("cap_quantile", m.cap_quantile),
    ):
        if value is not None:
            d[key] = value
    if m.role is not MetricRole.PRIMARY:
        d["role"] = m.role.value
    if m.lower_is_better:
        d["lower_is_better"] = True
    return d


def _parse_metrics(raw: object) -> tuple[MetricSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ExperimentInputError("'metrics' must be a non-empty list of metric definitions")
    out = []
    for i, m in enumerate(raw):
        where = f"metrics[{i}]"
        if not isinstance(m, Mapping):
            raise ExperimentInputError(f"{where} must be an object")
        unknown = sorted(set(m) - _METRIC_KEYS)
        if unknown:
            raise ExperimentInputError(f"{where}: unknown key(s) {', '.join(unknown)}")
        try:
            kind = MetricKind(str(m.get("type")))
            denominator = m.get("denominator") or (
                "denominator" if kind_of(kind).needs_denominator else None
            )
            out.append(
                MetricSpec(
                    name=str(m.get("name") or ""),
                    kind=kind,
                    numerator=m.get("numerator"),
                    denominator=denominator,
                    covariate=m.get("covariate"),
                    covariate_denominator=m.get("covariate_denominator"),
                    cap_quantile=m.get("cap_quantile"),
                    role=MetricRole(m.get("role", "primary")),
                    lower_is_better=bool(m.get("lower_is_better", False)),
                )
            )
        except ValueError as exc:
            raise ExperimentInputError(f"{where}: {exc}") from exc
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ExperimentInputError(f"metric names must be unique, got {', '.join(names)}")
    return tuple(out)


def _parse_period(raw: object, metrics: Sequence[MetricSpec], where: str) -> ExperimentStats:
    if not isinstance(raw, Mapping):
        raise ExperimentInputError(f"{where} must be an object")
    units = raw.get("units")
    if not isinstance(units, Mapping) or not units:
        raise ExperimentInputError(f"{where}.units must map each variant to its number of units")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in units.values()):
        raise ExperimentInputError(f"{where}.units: counts must be integers >= 0")
    stats = raw.get("stats")
    if not isinstance(stats, Mapping):
        raise ExperimentInputError(f"{where}.stats must map metric names to per-variant statistics")
    known = {m.name: m for m in metrics}
    unknown = sorted(set(stats) - set(known))
    if unknown:
        raise ExperimentInputError(
            f"{where}.stats: metric(s) {', '.join(unknown)} are not defined in 'metrics'"
        )
    parsed: dict[str, dict[str, SufficientStats]] = {}
    for name, metric in known.items():
        arms = stats.get(name)
        if not isinstance(arms, Mapping) or not arms:
            raise ExperimentInputError(
                f"{where}.stats.{name}: missing (needs statistics per variant)"
            )
        parsed[name] = {}
        for variant, values in arms.items():
            path = f"{where}.stats.{name}.{variant}"
            if variant not in units:
                raise ExperimentInputError(f"{path}: variant {variant!r} is not listed in units")
            if not isinstance(values, Mapping):
                raise ExperimentInputError(f"{path} must be an object of sums")
            try:
                parsed[name][str(variant)] = kind_of(metric.kind).stats_from_dict(dict(values))
            except (TypeError, ValueError) as exc:
                raise ExperimentInputError(f"{path}: {exc}") from exc
        columns = {s.columns for s in parsed[name].values()}
        if len(columns) > 1:
            raise ExperimentInputError(
                f"{where}.stats.{name}: variants carry different sums ({sorted(columns)})"
            )
        kind = kind_of(metric.kind)
        if not kind.fits(next(iter(parsed[name].values()))):
            raise ExperimentInputError(
                f"{where}.stats.{name}: a {metric.kind.value} metric "
                + ("needs" if kind.needs_denominator else "must not have")
                + " sum_d, sum_dd, sum_yd"
            )
    label = raw.get("label", "")
    return ExperimentStats(
        units={str(k): int(v) for k, v in units.items()}, metrics=parsed, label=str(label)
    )


__all__ = [
    "FORMAT",
    "VERSION",
    "StatsFile",
    "parse_stats_document",
    "read_stats_json",
    "stats_document",
    "write_stats_json",
]
