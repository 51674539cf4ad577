"""Per-segment (per-cohort) analysis: one result per segment, corrected, with heterogeneity.

A learning platform asks which intervention helps *which* learners. Given statistics per
segment (a pre-exposure column such as the cohort active at exposure time):

* every segment is analysed on its own (:func:`~cohortlens.experiments.analysis.analyze`),
  with its own SRM check;
* p-values of each (metric, treatment) are corrected **across segments** (Benjamini–Hochberg
  by default, as Mixpanel does), and segment verdicts use the corrected p-values;
* the segment SRM p-values are Holm-adjusted across segments before they are compared with
  ``srm_alpha``: a split broken in one segment is then flagged, while k looks at k segments
  do not multiply false alarms (Eppo documents the same concern for dimension SRM checks);
* **heterogeneity**: Cochran's Q (inverse-variance weights, ``k − 1`` df) tests whether the
  segment effects differ, with I², and pairwise z tests of differences (Holm-adjusted);
* the total is analysed from the *sum* of the segments, so they add up exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from cohortlens.experiments.analysis import Analysis, analyze, analyze_rows, decision_key, finish
from cohortlens.experiments.errors import (
    AnalysisStatus,
    ExperimentInputError,
    ReportStatus,
    Verdict,
)
from cohortlens.experiments.multiplicity import adjust
from cohortlens.experiments.results import ExperimentReport, _jsonable
from cohortlens.experiments.spec import AnalysisConfig, MetricSpec
from cohortlens.experiments.stats import ExperimentStats


@dataclass(frozen=True)
class Heterogeneity:
    """Do the segment effects of one (metric, treatment) differ?

    Attributes:
        metric, variant: the comparison.
        segments: the segments with a usable estimate (finite effect and standard error).
        q: Cochran's Q; ``df``: segments − 1; ``pvalue``: upper chi-square tail.
        i_squared: share of the variation across segments beyond chance, ``max(0, (Q−df)/Q)``.
        pooled_effect: the inverse-variance weighted mean effect.
        pairwise: ``(segment a, segment b, difference, z, p, p_holm)`` for every pair.
    """

    metric: str
    variant: str
    segments: tuple[str, ...]
    q: float
    df: int
    pvalue: float
    i_squared: float
    pooled_effect: float
    pairwise: tuple[tuple[str, str, float, float, float, float], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "metric": self.metric,
            "variant": self.variant,
            "segments": list(self.segments),
            "q": _jsonable(self.q),
            "df": self.df,
            "pvalue": _jsonable(self.pvalue),
            "i_squared": _jsonable(self.i_squared),
            "pooled_effect": _jsonable(self.pooled_effect),
            "pairwise": [
                {
                    "a": a,
                    "b": b,
                    "difference": _jsonable(d),
                    "z": _jsonable(z),
                    "pvalue": _jsonable(p),
                    "pvalue_holm": _jsonable(ph),
                }
                for a, b, d, z, p, ph in self.pairwise
            ],
        }


@dataclass(frozen=True)
class SegmentReport:
    """The analysis of an experiment per segment.

    Attributes:
        by: the segment column.
        total: the whole experiment (analysed from the sum of the segments).
        segments: segment -> its report; verdicts use p-values corrected across segments.
        segment_correction: the correction across segments (``bh`` by default).
        srm_pvalues_holm: segment -> SRM p-value Holm-adjusted across segments.
        heterogeneity: one record per (metric, treatment).
        preregistered: whether the segmentation was declared before looking; when false
            the report carries a warning that the segments may have been chosen after
            seeing the data.
    """

    by: str
    total: ExperimentReport
    segments: Mapping[str, ExperimentReport]
    segment_correction: str
    srm_pvalues_holm: Mapping[str, float]
    heterogeneity: tuple[Heterogeneity, ...]
    preregistered: bool = False

    @property
    def warning(self) -> str | None:
        """The post-hoc warning, or ``None`` when the segmentation was pre-registered."""
        if self.preregistered:
            return None
        return (
            f"Segments by {self.by!r} were not declared before the experiment: if they were "
            "chosen after looking at the data, treat segment findings as hypotheses to "
            "confirm in a new experiment."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``--json`` output of ``experiment analyze --by``)."""
        return {
            "by": self.by,
            "segment_correction": self.segment_correction,
            "preregistered": self.preregistered,
            "warning": self.warning,
            "total": self.total.to_dict(),
            "segments": {k: r.to_dict() for k, r in self.segments.items()},
            "srm_pvalues_holm": {k: _jsonable(v) for k, v in self.srm_pvalues_holm.items()},
            "heterogeneity": [h.to_dict() for h in self.heterogeneity],
        }


def analyze_segments(
    metrics: Sequence[MetricSpec],
    segments: Mapping[str, Sequence[ExperimentStats]],
    config: AnalysisConfig | None = None,
    *,
    by: str = "segment",
    segment_correction: str = "bh",
    preregistered: bool = False,
) -> SegmentReport:
    """Analyse every segment, correct across segments, test heterogeneity.

    Segments whose statistics have fewer than two arms with units are analysed with
    nothing to compare (their effects are ``not_computed``) rather than failing the whole
    request; the total must have two arms.

    Raises:
        ExperimentInputError: no segments, or an unknown correction.
    """
    config = config or AnalysisConfig()
    if not segments:
        raise ExperimentInputError("no segments to analyse")
    if segment_correction not in ("bh", "by", "holm", "bonferroni", "none"):
        raise ExperimentInputError(
            f"segment correction {segment_correction!r}: expected bh, by, holm, bonferroni or none"
        )
    total = analyze(metrics, _sum_periods(list(segments.values())), config)
    analyses: dict[str, Analysis] = {}
    empty: dict[str, ExperimentReport] = {}
    for name, periods in segments.items():
        units: dict[str, int] = {}
        for p in periods:
            for v, c in p.units.items():
                units[v] = units.get(v, 0) + c
        if sum(1 for c in units.values() if c > 0) < 2:
            empty[name] = _empty_report(total, name)
        else:
            analyses[name] = analyze_rows(metrics, list(periods), config)
    names = list(segments)
    srm_p = [analyses[n].srm.pvalue if n in analyses else empty[n].srm.pvalue for n in names]
    srm_holm = dict(zip(names, adjust(srm_p, "holm").tolist(), strict=True))
    _correct_across(analyses, decision_key(config), segment_correction)
    reports: dict[str, ExperimentReport] = {}
    for n in names:
        if n in empty:
            reports[n] = empty[n]
            continue
        flagged = bool(srm_holm[n] < config.srm_alpha)
        reports[n] = finish(analyses[n], config, pvalue_key="segment_pvalue", srm_flagged=flagged)
    hetero = _heterogeneity(reports, [(e.metric, e.variant) for e in total.effects])
    return SegmentReport(
        by=by,
        total=total,
        segments=reports,
        segment_correction=segment_correction,
        srm_pvalues_holm=srm_holm,
        heterogeneity=hetero,
        preregistered=preregistered,
    )


def _sum_periods(per_segment: list[Sequence[ExperimentStats]]) -> list[ExperimentStats]:
    by_label: dict[str, ExperimentStats] = {}
    order: list[str] = []
    for periods in per_segment:
        for p in periods:
            if p.label in by_label:
                by_label[p.label] = replace(by_label[p.label] + p, label=p.label)
            else:
                by_label[p.label] = p
                order.append(p.label)
    return [by_label[k] for k in order]


def _empty_report(total: ExperimentReport, name: str) -> ExperimentReport:
    """A segment with fewer than two arms: nothing to compare (effects ``not_computed``)."""
    blank: dict[str, Any] = dict.fromkeys(_NUMERIC, math.nan)
    effects = tuple(
        replace(
            e,
            status=AnalysisStatus.EMPTY_ARM,
            verdict=Verdict.NOT_COMPUTED,
            n_control=0,
            n_treatment=0,
            guardrail_failed=None,
            **blank,
        )
        for e in total.effects
    )
    srm = replace(total.srm, statistic=math.nan, pvalue=math.nan, flagged=False)
    return replace(total, effects=effects, srm=srm, looks=(), units={}, status=ReportStatus.OK)


_NUMERIC = (
    "mean_control",
    "mean_treatment",
    "effect_size",
    "effect_size_ci_lower",
    "effect_size_ci_upper",
    "rel_effect_size",
    "rel_effect_size_ci_lower",
    "rel_effect_size_ci_upper",
    "std_error",
    "rel_std_error",
    "statistic",
    "df",
    "pvalue",
    "rel_statistic",
    "rel_pvalue",
    "seq_ci_lower",
    "seq_ci_upper",
    "seq_rel_ci_lower",
    "seq_rel_ci_upper",
    "seq_pvalue",
    "seq_rel_pvalue",
    "pvalue_holm",
    "pvalue_bh",
    "impact_ci_lower",
    "impact_ci_upper",
)


def _correct_across(analyses: Mapping[str, Analysis], key: str, method: str) -> None:
    """Set ``segment_pvalue`` on every row: ``key`` corrected across segments, per
    (metric, treatment)."""
    family: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in analyses.values():
        for row in a.rows:
            family.setdefault((row["metric"], row["variant"]), []).append(row)
    for rows in family.values():
        adjusted = adjust([r.get(key, math.nan) for r in rows], method).tolist()
        for r, p in zip(rows, adjusted, strict=True):
            r["segment_pvalue"] = p


def _heterogeneity(
    reports: Mapping[str, ExperimentReport], pairs: Sequence[tuple[str, str]]
) -> tuple[Heterogeneity, ...]:
    usable: dict[tuple[str, str], list[tuple[str, float, float]]] = {p: [] for p in pairs}
    for n, r in reports.items():
        for e in r.effects:
            rows = usable.get((e.metric, e.variant))
            if rows is not None and math.isfinite(e.effect_size) and e.std_error > 0:
                rows.append((n, e.effect_size, e.std_error))
    return tuple(_cochran(metric, variant, usable[(metric, variant)]) for metric, variant in pairs)


@functools.lru_cache(maxsize=64)
def _pairs(k: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Index pairs ``i < j`` of ``k`` items (``np.triu_indices`` is slow for small k)."""
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    return np.array([a for a, _ in pairs], np.intp), np.array([b for _, b in pairs], np.intp)


def _cochran(metric: str, variant: str, rows: list[tuple[str, float, float]]) -> Heterogeneity:
    """Cochran's Q, I² and Holm-adjusted pairwise z tests over the segment estimates."""
    k = len(rows)
    names = tuple(r[0] for r in rows)
    if k < 2:
        pooled_one = rows[0][1] if rows else math.nan
        return Heterogeneity(
            metric, variant, names, math.nan, max(k - 1, 0), math.nan, math.nan, pooled_one, ()
        )
    est = np.array([r[1] for r in rows])
    se = np.array([r[2] for r in rows])
    w = 1.0 / se**2
    pooled = float(w @ est / w.sum())
    q = float(w @ (est - pooled) ** 2)
    df = k - 1
    p = float(special.chdtrc(df, q))
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    i, j = _pairs(k)
    diff = est[j] - est[i]
    z = diff / np.sqrt(se[i] ** 2 + se[j] ** 2)
    pz = 2.0 * special.ndtr(-np.abs(z))
    holm = adjust(pz, "holm")
    pairwise = tuple(
        zip(
            [names[a] for a in i.tolist()],
            [names[b] for b in j.tolist()],
            diff.tolist(),
            z.tolist(),
            pz.tolist(),
            holm.tolist(),
            strict=True,
        )
    )
    return Heterogeneity(metric, variant, names, q, df, p, i2, pooled, pairwise)


def cohort_at_exposure(
    outcomes: Any,
    routing_history: Sequence[Mapping[str, Any]],
    assignments: Mapping[int, Any],
    fallback_model: int | None = None,
) -> Any:
    """Add a ``cohort`` column: each learner's cohort under the model that served it at
    exposure.

    The routing in effect at ``exposed_at`` is the last change at or before it. A learner
    is served by that routing's candidate when there is one and
    ``bucket(learner_id, salt) < round(candidate_weight × 10000)`` (the service's rule:
    ``serve.routing.candidate_threshold`` with
    :func:`~cohortlens.experiments.assignment.buckets`), otherwise by its stable model.

    Args:
        outcomes: Arrow table with ``learner_id`` and ``exposed_at`` (the store's
            ``experiment_outcomes``).
        routing_history: routing changes (``at``, ``routing`` with ``stable_model_id`` and,
            during a release, ``candidate_model_id``, ``candidate_weight``, ``salt``),
            oldest first.
        assignments: model id -> Arrow table (``learner_id``, ``cohort_id``, ``archetype``).
        fallback_model: the model for exposures before the first routing change.

    Adds ``cohort_model_id`` (the serving model), ``cohort_role`` (``stable`` or
    ``candidate``) and ``cohort`` = ``"<cohort_id>:<archetype>"``; learners the serving
    model did not assign get a null cohort (they form the ``(none)`` segment).
    """
    import duckdb
    import numpy as np
    import pyarrow as pa

    from cohortlens.experiments.assignment import N_BUCKETS, buckets

    def field(key: str) -> list[Any]:
        return [r["routing"].get(key) for r in routing_history]

    changes = pa.table(
        {
            "at": pa.array([r["at"] for r in routing_history], pa.timestamp("us", tz="UTC")),
            "stable": pa.array(field("stable_model_id"), pa.int64()),
            "candidate": pa.array(field("candidate_model_id"), pa.int64()),
            "weight": pa.array([w or 0.0 for w in field("candidate_weight")], pa.float64()),
            "salt": pa.array(field("salt"), pa.string()),
        }
    )
    with duckdb.connect() as con:
        con.register("o", outcomes)
        con.register("c", changes)
        routed = con.sql(
            """SELECT o.*, r.stable, r.candidate, r.weight, r.salt
                FROM o LEFT JOIN LATERAL (
                    SELECT c.stable, c.candidate, c.weight, c.salt FROM c
                    WHERE c.at <= o.exposed_at ORDER BY c.at DESC LIMIT 1) r ON TRUE
                ORDER BY o.learner_id"""
        ).to_arrow_table()
    stable = routed.column("stable").to_numpy(zero_copy_only=False)
    fallback = np.nan if fallback_model is None else float(fallback_model)
    stable = np.where(np.isnan(stable.astype(float)), fallback, stable.astype(float))
    candidate = routed.column("candidate").to_numpy(zero_copy_only=False).astype(float)
    weight = routed.column("weight").to_numpy(zero_copy_only=False).astype(float)
    salts = routed.column("salt")
    ids = routed.column("learner_id")
    on_candidate = np.zeros(routed.num_rows, dtype=bool)
    eligible = (
        ~np.isnan(candidate)
        & (np.nan_to_num(weight) > 0.0)
        & salts.is_valid().to_numpy(zero_copy_only=False)
    )
    salt_values = np.asarray(salts.to_pylist(), dtype=object)
    for salt in {str(x) for x in salt_values[eligible]}:
        rows = np.flatnonzero(eligible & (salt_values == salt))
        threshold = np.round(weight[rows] * N_BUCKETS)  # half to even, as Python's round()
        on_candidate[rows] = buckets(ids.take(pa.array(rows)), salt) < threshold
    served = np.where(on_candidate, candidate, stable)
    routed = routed.drop_columns(["stable", "candidate", "weight", "salt"])
    served_ids = pa.array(np.nan_to_num(served).astype(np.int64), mask=np.isnan(served))
    routed = routed.append_column("cohort_model_id", served_ids).append_column(
        "cohort_role", pa.array(np.where(on_candidate, "candidate", "stable"), pa.string())
    )
    parts = [
        t.select(["learner_id", "cohort_id", "archetype"]).append_column(
            "model_id", pa.repeat(pa.scalar(int(m), pa.int64()), t.num_rows)
        )
        for m, t in assignments.items()
    ]
    assigned = (
        pa.concat_tables(parts)
        if parts
        else pa.table(
            {
                "learner_id": pa.array([], pa.string()),
                "cohort_id": pa.array([], pa.int32()),
                "archetype": pa.array([], pa.string()),
                "model_id": pa.array([], pa.int64()),
            }
        )
    )
    with duckdb.connect() as con:
        con.register("m", routed)
        con.register("a", assigned)
        return con.sql(
            """SELECT m.*, CASE WHEN a.cohort_id IS NULL THEN NULL
                                ELSE CAST(a.cohort_id AS VARCHAR) || ':' || a.archetype END
                           AS cohort
               FROM m LEFT JOIN a ON a.model_id = m.cohort_model_id
                                 AND a.learner_id = m.learner_id
               ORDER BY m.learner_id"""
        ).to_arrow_table()


__all__ = ["Heterogeneity", "SegmentReport", "analyze_segments", "cohort_at_exposure"]
