"""The learners behind each cohort, for the report's drill-down tables.

Per cohort: its members in the feature table, each with the cohort's most distinctive
features (in original units), the outcomes given, and the distance to the cohort's centre
(scaled units, as :meth:`CohortModel.transform` measures it); the "typical learners" are the
members nearest the centre. So that a report of a million learners stays small, at most
``max_rows`` members per cohort are embedded: the typical learners plus a seeded random
sample of the rest (the report says so, and how to get the full list).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortlens.cohorts import _matrix as mx
from cohortlens.cohorts.archetypes import feature_label, feature_unit
from cohortlens.cohorts.model import CohortModel
from cohortlens.cohorts.params import INSUFFICIENT_COHORT
from cohortlens.cohorts.summary import RATE_OUTCOMES, distinctive, explain_feature, ordered_cards
from cohortlens.reports.table import Column, decimals_for_values

#: Learners embedded per cohort (beyond it: the typical learners plus a random sample).
MAX_ROWS_PER_COHORT = 2000
#: Nearest-to-centre members listed as a cohort's typical learners.
TYPICAL_LEARNERS = 5
#: Rows scored at a time (bounds memory at a million learners).
_CHUNK_ROWS = 262_144


@dataclass(frozen=True)
class CohortLearners:
    """The drill-down of one cohort.

    Attributes:
        cohort_id: the cohort.
        total: its members among the learners given.
        columns: the table's columns (learner id, distinctive features, outcomes, distance).
        rows: the embedded rows (at most ``max_rows``), nearest the centre first.
        typical: (learner id, distance) of the members nearest the centre.
        median_distance: the members' median distance to the centre (NaN for id 0).
    """

    cohort_id: int
    total: int
    columns: tuple[Column, ...]
    rows: list[list[object]]
    typical: list[tuple[str, float]]
    median_distance: float

    @property
    def sampled(self) -> bool:
        """True when only part of the cohort is embedded."""
        return len(self.rows) < self.total


def _scores(model: CohortModel, X: mx.FeatureTable) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """Cohort id and distance to the own centre of every learner (chunked)."""
    n = mx.n_rows(X)
    labels = np.empty(n, dtype=np.int64)
    own = np.full(n, np.nan)
    ids = model.cohort_ids_
    step = _CHUNK_ROWS if isinstance(X, pa.Table) else max(n, 1)
    for start in range(0, n, step):
        part = X.slice(start, step) if isinstance(X, pa.Table) else X
        lab = model.predict(part)
        dist = model.transform(part)
        col = np.clip(np.searchsorted(ids, lab), 0, dist.shape[1] - 1)
        mine = dist[np.arange(len(lab)), col]
        mine[lab == INSUFFICIENT_COHORT] = np.nan
        labels[start : start + len(lab)] = lab
        own[start : start + len(lab)] = mine
    return labels, own


def _column_values(X: mx.FeatureTable, name: str, rows: np.ndarray) -> list[object]:  # noqa: N803
    """Values of column ``name`` at ``rows`` (floats with NaN for null, or Python objects)."""
    if isinstance(X, pa.Table | pa.RecordBatch):
        arr = X.column(name).take(pa.array(rows))
        if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type):
            return np.asarray(
                pc.fill_null(arr.cast(pa.float64()), math.nan).to_numpy(), dtype=np.float64
            ).tolist()
        return arr.to_pylist()
    values = np.asarray(X[name])[rows]
    if values.dtype.kind in "fiu":
        return values.astype(np.float64).tolist()
    return values.tolist()


def _outcome_columns(outcomes: pa.Table | None, learner_ids: pa.Array) -> dict[str, list[object]]:
    """Outcome values aligned with ``learner_ids`` (None where a learner has none)."""
    if outcomes is None or "learner_id" not in outcomes.column_names:
        return {}
    pos = pc.index_in(
        learner_ids.cast(pa.string()), value_set=outcomes["learner_id"].cast(pa.string())
    )
    out: dict[str, list[object]] = {}
    for name in (*RATE_OUTCOMES, "revenue"):
        if name not in outcomes.column_names:
            continue
        out[name] = outcomes[name].take(pos).to_pylist()
    return out


def cohort_learners(
    model: CohortModel,
    X: mx.FeatureTable,  # noqa: N803
    outcomes: pa.Table | None = None,
    *,
    max_rows: int = MAX_ROWS_PER_COHORT,
    n_typical: int = TYPICAL_LEARNERS,
    revenue_unit: str | None = None,
) -> list[CohortLearners]:
    """The drill-down of every cohort with members (report order)."""
    if max_rows < n_typical:
        raise ValueError(f"max_rows == {max_rows}, must be >= n_typical == {n_typical}")
    labels, own = _scores(model, X)
    ids_all = X.column("learner_id") if isinstance(X, pa.Table | pa.RecordBatch) else None
    rng = np.random.default_rng(model.random_state)
    out = []
    for card in ordered_cards(model):
        members = np.flatnonzero(labels == card.cohort_id)
        if len(members) == 0:
            continue
        dist = own[members]
        finite = np.isfinite(dist)
        order = np.argsort(np.where(finite, dist, np.inf), kind="stable")
        typical_rows = members[order[: min(n_typical, int(finite.sum()))]]
        if len(members) > max_rows:
            rest = np.setdiff1d(members, typical_rows, assume_unique=True)
            pick = rng.choice(rest, max_rows - len(typical_rows), replace=False)
            chosen = np.concatenate([typical_rows, pick])
        else:
            chosen = members
        chosen = chosen[
            np.argsort(np.where(np.isfinite(own[chosen]), own[chosen], np.inf), kind="stable")
        ]
        out.append(
            _table(
                model,
                X,
                card.cohort_id,
                distinctive(card, 4),
                chosen,
                own,
                outcomes,
                ids_all,
                len(members),
                typical_rows,
                float(np.nanmedian(dist)) if finite.any() else math.nan,
                revenue_unit,
            )
        )
    return out


def _table(
    model: CohortModel,
    X: mx.FeatureTable,  # noqa: N803
    cohort_id: int,
    features: Sequence[str],
    rows: np.ndarray,
    own: np.ndarray,
    outcomes: pa.Table | None,
    ids_all: pa.ChunkedArray | pa.Array | None,
    total: int,
    typical_rows: np.ndarray,
    median_distance: float,
    revenue_unit: str | None,
) -> CohortLearners:
    if ids_all is not None:
        ids = ids_all.take(pa.array(rows))
        id_values = [str(v) for v in ids.to_pylist()]
    else:
        ids_np = np.asarray(X["learner_id"])[rows] if "learner_id" in mx.column_names(X) else rows
        id_values = [str(v) for v in ids_np.tolist()]
        ids = pa.array(id_values)
    columns: list[Column] = [Column("learner_id", "learner", "text", tip="The learner's id.")]
    values: list[list[object]] = [list(id_values)]
    for col in features:
        vals = _column_values(X, col, rows)
        unit = feature_unit(col)
        label = feature_label(col)
        tip = explain_feature(col)
        if unit in ("share", "probability"):
            columns.append(Column(col, label, "pct", 0, tip))
        else:
            nums = [v for v in vals if isinstance(v, float)]
            # the unit only when the label does not already say it ("active weeks (weeks)")
            said = unit.split("/")[0].split(" ")[0] in label
            header = label if not unit or said else f"{label} ({unit})"
            columns.append(Column(col, header, "num", decimals_for_values(nums), tip))
        values.append(vals)
    for name, vals in _outcome_columns(outcomes, pa.array(ids)).items():
        if name in RATE_OUTCOMES:
            columns.append(Column(name, name, "bool"))
        else:
            unit = f" ({revenue_unit})" if revenue_unit else ""
            nums = [float(v) for v in vals if isinstance(v, int | float)]
            columns.append(Column(name, f"{name}{unit}", "num", decimals_for_values(nums)))
        values.append(vals)
    if cohort_id != INSUFFICIENT_COHORT:
        columns.append(
            Column(
                "distance",
                "distance to centre",
                "num",
                2,
                tip="How far the learner sits from the cohort's centre (scaled units; 0 = "
                "exactly typical).",
            )
        )
        values.append(own[rows].tolist())
    table_rows = [list(r) for r in zip(*values, strict=True)]
    index = {int(r): i for i, r in enumerate(rows.tolist())}
    typical = [(id_values[index[int(r)]], float(own[r])) for r in typical_rows.tolist()]
    return CohortLearners(cohort_id, total, tuple(columns), table_rows, typical, median_distance)


__all__ = ["MAX_ROWS_PER_COHORT", "TYPICAL_LEARNERS", "CohortLearners", "cohort_learners"]
