"""Small ground-truth event generator for the feature tests (independent of cohortlens.simulate)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cohortlens.events.schema import EVENT_SCHEMA

T0_US = 1_704_067_200_000_000  # 2024-01-01 00:00 UTC (a Monday)
DAY_US = 86_400_000_000


@dataclass(frozen=True)
class Synth:
    """Events plus the true per-learner parameters."""

    events: pa.Table
    growth: np.ndarray
    half_life_days: np.ndarray
    pref_entropy: np.ndarray
    learner_ids: list[str]


def make_events(
    n_learners: int = 200,
    seed: int = 0,
    n_domains: int = 5,
    events_range: tuple[int, int] = (80, 250),
    weeks: int = 12,
    guess: float = 0.25,
) -> Synth:
    """Learners with growth, memory half-life and domain preferences; 35 % of events repeat."""
    rng = np.random.default_rng(seed)
    n_items_per = 150
    diff = rng.normal(0, 1, (n_domains, n_items_per))
    growth = rng.uniform(0.0, 0.35, n_learners)
    theta0 = rng.normal(0, 0.8, n_learners)
    half = np.exp(rng.normal(np.log(6.0), 0.9, n_learners))
    conc = rng.choice([0.2, 1.0, 5.0], n_learners)
    rows: dict[str, list] = {c: [] for c in EVENT_SCHEMA.names}
    ent = np.zeros(n_learners)
    ids = [f"L{i:05d}" for i in range(n_learners)]
    for li in range(n_learners):
        pref = rng.dirichlet(np.full(n_domains, conc[li]))
        pref = np.clip(pref, 1e-12, None)
        pref /= pref.sum()
        ent[li] = -(pref * np.log(pref)).sum() / np.log(n_domains)
        n = int(rng.integers(*events_range))
        t = np.sort(rng.uniform(0, weeks * 7, n))  # days
        seen: list[tuple[int, int, float]] = []
        for k in range(n):
            if seen and rng.random() < 0.35:
                d, it, last = seen[int(rng.integers(len(seen)))]
                gap = t[k] - last
                p = guess + (1 - guess) * 2.0 ** (-gap / half[li])
            else:
                d = int(rng.choice(n_domains, p=pref))
                it = int(rng.integers(n_items_per))
                z = theta0[li] + growth[li] * t[k] / 7.0 - diff[d, it]
                p = 1 / (1 + np.exp(-z))
            y = float(rng.random() < p)
            seen = [s for s in seen if not (s[0] == d and s[1] == it)]
            seen.append((d, it, t[k]))
            rows["event_id"].append(f"{ids[li]}-{k}")
            rows["learner_id"].append(ids[li])
            rows["ts"].append(T0_US + int(t[k] * DAY_US))
            rows["domain"].append(f"d{d}")
            rows["item_id"].append(f"i{d}_{it}")
            rows["outcome"].append(y)
            rows["duration_s"].append(float(rng.uniform(10, 60)))
    table = pa.table(
        {
            "event_id": pa.array(rows["event_id"], pa.string()),
            "learner_id": pa.array(rows["learner_id"], pa.string()),
            "ts": pa.array(rows["ts"], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "domain": pa.array(rows["domain"], pa.string()),
            "item_id": pa.array(rows["item_id"], pa.string()),
            "outcome": pa.array(rows["outcome"], pa.float64()),
            "duration_s": pa.array(rows["duration_s"], pa.float64()),
        },
        schema=EVENT_SCHEMA,
    )
    return Synth(table, growth, half, ent, ids)


def events_table(
    learner: list[str],
    ts_days: list[float],
    item: list[str],
    outcome: list[float | None],
    domain: list[str] | None = None,
    duration: list[float | None] | None = None,
) -> pa.Table:
    """Hand-written events (ts in days after T0)."""
    n = len(learner)
    return pa.table(
        {
            "event_id": pa.array([str(i) for i in range(n)], pa.string()),
            "learner_id": pa.array(learner, pa.string()),
            "ts": pa.array([T0_US + round(d * DAY_US) for d in ts_days], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "domain": pa.array(domain or ["d0"] * n, pa.string()),
            "item_id": pa.array(item, pa.string()),
            "outcome": pa.array(outcome, pa.float64()),
            "duration_s": pa.array(duration or [None] * n, pa.float64()),
        },
        schema=EVENT_SCHEMA,
    )
