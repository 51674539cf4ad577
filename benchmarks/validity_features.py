"""Validity of the feature engines on real data (EdNet KT1 sample) and the simulator.

EdNet: per learner, the last 20 % of graded attempts (time order) are the test set. Every model
predicts each test attempt before seeing it (item statistics and population fits use train
rows only; online models update after predicting).
  * ability (next-attempt correctness, all test attempts): our Elo/Kalman engine vs a careful
    Elo (learner + part + item, alpha 0.8, beta 0.05, reference AUC 0.766 / log loss 0.459)
    and the train-mean constant;
  * retention (test attempts >= 1 day after the previous attempt of the item): our per-learner
    MAP half-life model vs the train-mean constant and half-life regression with a guess floor
    (reference: constant 0.545; HLR+floor 0.454 / AUC 0.775; FSRS-6 0.425 / AUC 0.820).
Simulator: Spearman of the features with the true traits (learners with >= 50 graded events).

Run: ``.venv/bin/python benchmarks/validity_features.py [--sim-learners 100000]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import optimize
from scipy.stats import spearmanr
from sklearn.metrics import log_loss, roc_auc_score

from cohortlens.events.schema import EVENT_SCHEMA
from cohortlens.features import FeatureParams, compute_features
from cohortlens.features._prep import Prepared, prepare
from cohortlens.features.engine import global_stats_from
from cohortlens.features.retention import learner_map, predict_recall, review_pairs
from cohortlens.features.stats import item_stats
from cohortlens.features.velocity import compute_velocity

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def load_ednet_kt1(root: Path = DATA / "ednet_sample") -> pa.Table:
    """EdNet KT1 sample as canonical events (exact duplicates of (ts, question) removed)."""
    q = pd.read_csv(
        root / "contents" / "questions.csv", usecols=["question_id", "correct_answer", "part"]
    )
    frames = []
    for f in sorted((root / "KT1").glob("u*.csv")):
        df = pd.read_csv(f)
        df["learner_id"] = f.stem
        frames.append(df)
    ev = pd.concat(frames, ignore_index=True)
    ev = ev.drop_duplicates(["learner_id", "timestamp", "question_id"])
    ev = ev.merge(q, on="question_id", how="left")
    ev["outcome"] = (ev["user_answer"] == ev["correct_answer"]).astype(float)
    return pa.table(
        {
            "event_id": pa.array([f"{a}-{i}" for i, a in enumerate(ev["learner_id"])]),
            "learner_id": pa.array(ev["learner_id"].to_numpy(), pa.string()),
            "ts": pa.array(ev["timestamp"].to_numpy() * 1000, pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "domain": pa.array(("part" + ev["part"].astype(str)).to_numpy(), pa.string()),
            "item_id": pa.array(ev["question_id"].to_numpy(), pa.string()),
            "outcome": pa.array(ev["outcome"].to_numpy(), pa.float64()),
            "duration_s": pa.array(ev["elapsed_time"].to_numpy() / 1000.0, pa.float64()),
        },
        schema=EVENT_SCHEMA,
    )


def time_split(events: pa.Table, test_share: float = 0.2) -> tuple[pa.Table, np.ndarray]:
    """Sort by (learner, ts, item) and flag each learner's last ``test_share`` graded rows."""
    events = events.take(
        pc.sort_indices(
            events, [("learner_id", "ascending"), ("ts", "ascending"), ("item_id", "ascending")]
        )
    )
    lid = events.column("learner_id").to_numpy(zero_copy_only=False)
    graded = ~np.isnan(events.column("outcome").to_numpy(zero_copy_only=False).astype(float))
    codes = pd.factorize(lid)[0]
    rank = pd.Series(graded.astype(int)).groupby(codes).cumsum().to_numpy()
    n_graded = np.bincount(codes, weights=graded)[codes]
    test = graded & (rank > np.ceil((1 - test_share) * n_graded))
    return events, test


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return {
        "auc": float(roc_auc_score(y, p)),
        "log_loss": float(log_loss(y, p)),
        "rmse": float(np.sqrt(np.mean((y - p) ** 2))),
        "n": len(y),
    }


def careful_elo(prep: Prepared, alpha: float = 0.8, beta: float = 0.05) -> np.ndarray:
    """Reference Elo (learner + part + item, all online, K = alpha / (1 + beta n)); p before update."""
    n = len(prep.ts_us)
    order = np.argsort(prep.ts_us, kind="stable")  # global time order (item difficulty is shared)
    theta: dict[int, float] = {}
    theta_d: dict[tuple[int, int], float] = {}
    b: dict[int, float] = {}
    n_l: dict[int, int] = {}
    n_ld: dict[tuple[int, int], int] = {}
    n_i: dict[int, int] = {}
    out = np.full(n, np.nan)
    for e in order:  # a reference baseline: a plain loop is fine here
        y = prep.outcome[e]
        if np.isnan(y):
            continue
        learner, item, dom = int(prep.learner[e]), int(prep.item_local[e]), int(prep.domain[e])
        key = (learner, dom)
        z = theta.get(learner, 0.0) + theta_d.get(key, 0.0) - b.get(item, 0.0)
        p = 1.0 / (1.0 + math.exp(-z))
        out[e] = p
        r = y - p
        theta[learner] = theta.get(learner, 0.0) + alpha / (1 + beta * n_l.get(learner, 0)) * r
        theta_d[key] = theta_d.get(key, 0.0) + alpha / (1 + beta * n_ld.get(key, 0)) * r
        b[item] = b.get(item, 0.0) - alpha / (1 + beta * n_i.get(item, 0)) * r
        n_l[learner] = n_l.get(learner, 0) + 1
        n_ld[key] = n_ld.get(key, 0) + 1
        n_i[item] = n_i.get(item, 0) + 1
    return out


def hlr_floor(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> np.ndarray:
    """Half-life regression with a guess floor: p = g + (1-g) 2^(-gap/h), log2 h = w . x."""

    def feats(d: dict[str, np.ndarray]) -> np.ndarray:
        return np.column_stack([np.ones(len(d["gap"])), np.sqrt(1 + d["nc"]), np.sqrt(1 + d["nw"])])

    xtr, xte = feats(train), feats(test)

    def nll(w: np.ndarray) -> float:
        g = 1 / (1 + np.exp(-w[0]))
        h = 2.0 ** np.clip(xtr @ w[1:], -6, 9)
        p = np.clip(g + (1 - g) * 2.0 ** (-train["gap"] / h), 1e-6, 1 - 1e-6)
        y = train["y"]
        return -float(np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    w = optimize.minimize(
        nll,
        np.array([0.0, 1.0, 0.5, -0.5]),
        method="Nelder-Mead",
        options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-9},
    ).x
    g = 1 / (1 + np.exp(-w[0]))
    h = 2.0 ** np.clip(xte @ w[1:], -6, 9)
    return g + (1 - g) * 2.0 ** (-test["gap"] / h)


def ednet(params: FeatureParams) -> dict[str, object]:
    """Ability and retention validity on the EdNet sample (time-ordered 80/20 split)."""
    events, test = time_split(load_ednet_kt1())
    train_tbl = events.filter(pa.array(~test))
    items = item_stats(train_tbl, params.velocity)
    prep = prepare(events, items)  # same row order as ``events`` (sorted, no exact ties)
    assert np.array_equal(prep.ts_us, events.column("ts").cast(pa.int64()).to_numpy())
    y = prep.outcome
    res: dict[str, object] = {"n_events": len(y), "n_test": int(test.sum())}
    # ---- ability: next-attempt correctness on every test attempt
    vel = compute_velocity(prep, items, params.velocity)
    elo = careful_elo(prep)
    base = float(np.nanmean(y[~test]))
    res["ability"] = {
        "constant": _metrics(y[test], np.full(int(test.sum()), base)),
        "careful_elo_learner_part_item": _metrics(y[test], elo[test]),
        "ours_first_attempt_ability": _metrics(y[test], vel.p_pred[test]),
    }
    # ---- retention: test attempts >= 1 day after the previous attempt of the item
    pairs = review_pairs(prep, params.retention)
    is_test_pair = test[pairs.event_index]
    tr_mask = ~is_test_pair
    train_pairs = pairs.take(tr_mask, prep.n_learners)
    # population fit and learner MAPs on train pairs only
    from cohortlens.features._hash import learner_hash
    from cohortlens.features.engine import PairSample, _cap  # noqa: F401  (same code path)

    hashes = learner_hash(prep.learner_ids)
    sample = PairSample(
        hashes[train_pairs.learner], train_pairs.gap_days, train_pairs.recalled, train_pairs.x
    )
    order = np.argsort(sample.learner_hash, kind="stable")
    sample = PairSample(
        sample.learner_hash[order], sample.gap_days[order], sample.recalled[order], sample.x[order]
    )
    stats = global_stats_from(items, [sample], params)
    a, _ = learner_map(train_pairs, stats.retention, params.retention)
    scored = is_test_pair & (pairs.gap_days >= 1.0)
    ln_h = a[pairs.learner] + pairs.x @ np.asarray(stats.retention.coef)
    lo, hi = np.log(params.retention.half_life_bounds_days)
    p_ours = predict_recall(pairs.gap_days, np.clip(ln_h, lo, hi), stats.retention.guess_floor)
    yr = pairs.recalled
    # HLR counts: before_correct = (x0 + 1)^2, before_wrong = x1^2
    nc, nw = (pairs.x[:, 0] + 1) ** 2, pairs.x[:, 1] ** 2
    tr = tr_mask & (pairs.gap_days >= 1.0)
    d_tr = {"gap": pairs.gap_days[tr], "y": yr[tr], "nc": nc[tr], "nw": nw[tr]}
    d_te = {"gap": pairs.gap_days[scored], "y": yr[scored], "nc": nc[scored], "nw": nw[scored]}
    # engines combined: repeats >= min gap from the forgetting curve, the rest from ability
    combined = vel.p_pred.copy()
    combined[pairs.event_index] = p_ours
    res["ability"]["ours_ability_plus_retention"] = _metrics(y[test], combined[test])  # type: ignore[index]
    res["retention"] = {
        "constant": _metrics(yr[scored], np.full(int(scored.sum()), float(yr[tr].mean()))),
        "hlr_floor": _metrics(yr[scored], hlr_floor(d_tr, d_te)),
        "ours": _metrics(yr[scored], p_ours[scored]),
        "population": {
            "guess_floor": stats.retention.guess_floor,
            "coef": list(stats.retention.coef),
            "mu_ln_h": stats.retention.mu_ln_h,
            "sigma_ln_h": stats.retention.sigma_ln_h,
        },
    }
    return res


def simulator(n_learners: int, seed: int, params: FeatureParams) -> dict[str, object]:
    """Spearman of velocity, half-life and entropy with the simulator's true traits."""
    from cohortlens.simulate import SimulationParams, simulate

    t0 = time.perf_counter()
    sim = simulate(SimulationParams(n_learners=n_learners, seed=seed))
    t1 = time.perf_counter()
    feats = compute_features(sim.events, params)
    t2 = time.perf_counter()
    f = feats.to_pandas().set_index("learner_id")
    truth = sim.truth.to_pandas().set_index("learner_id")
    d = f.join(
        truth[["growth_rate", "half_life_days", "pref_entropy", "n_graded", "learner_type"]].rename(
            columns={"half_life_days": "true_half_life_days"}
        )
    )
    m = d[d["n_graded"] >= 50]

    def rho(a: str, b: str) -> float:
        ok = m[a].notna() & m[b].notna()
        return float(spearmanr(m.loc[ok, a], m.loc[ok, b])[0])

    return {
        "n_learners": n_learners,
        "n_events": sim.events.num_rows,
        "n_eligible": len(m),
        "simulate_s": round(t1 - t0, 2),
        "features_s": round(t2 - t1, 2),
        "spearman_velocity_growth": rho("velocity_logit_per_week", "growth_rate"),
        "spearman_half_life": rho("half_life_days", "true_half_life_days"),
        "spearman_entropy": rho("affinity_entropy_norm", "pref_entropy"),
        "null_velocity_share": float(m["velocity_logit_per_week"].isna().mean()),
        "null_half_life_share": float(m["half_life_days"].isna().mean()),
    }


def main() -> None:
    """Print the validity figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sim-learners", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip-sim", action="store_true")
    args = ap.parse_args()
    params = FeatureParams()
    out: dict[str, object] = {}
    if (DATA / "ednet_sample").exists():
        out["ednet"] = ednet(params)
    if not args.skip_sim:
        out["simulator"] = simulator(args.sim_learners, args.seed, params)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
