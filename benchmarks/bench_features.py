"""Feature engine throughput: our kernels vs DuckDB SQL vs pandas groupby, and the full pipeline.

Subset (identical definitions in the three engines, agreement checked to 1e-9 relative: the
run fails, exit 1, when two engines disagree):
  (a) count-based domain shares and their plug-in entropy H in nats (no correction);
  (b) weekly activity EMA (events per week, half-life 4 weeks, silent weeks decay it,
      normalized by 1 - (1 - lambda)^weeks, from the first to the last active week);
  (c) review pairs (consecutive graded attempts of one item >= 1 hour apart): mean recall, mean
      gap, crude half-life mean_gap / -log2(clip(mean recall, .01, .99)).
Timed from an in-memory Arrow table of events in canonical (learner_id, ts) order, read from
Parquet with the string columns as Arrow dictionaries (as the pipeline reads them) or as plain
strings; each form is given to both engines (DuckDB scans it zero-copy with its 2 threads; pandas
from a DataFrame of plain strings; ours = ``prepare`` + the library's kernels, one process).
Full: ``build_features`` from Parquet (all three engines, 2 worker processes), peak RSS of the
process tree sampled every 0.1 s, at 1M / 10M / 50M events.

Usage: ``python -m benchmarks.bench_features [--sizes 1000000 10000000 50000000] [--repeats 3]
[--input both|dictionary|plain] [--only subset|full]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._harness import OUT

LAM = 1.0 - 2.0 ** (-1.0 / 4.0)
MONDAY0_US = 4 * 86_400_000_000
WEEK_US = 7 * 86_400_000_000
MIN_GAP_US = 3_600_000_000


def make_data(n_events: int, chunk_learners: int = 20_000) -> Path:
    """About ``n_events`` simulated events as a Parquet directory (chunks of learners, cached),
    in canonical order: sorted by (learner_id, ts), as the store exports events."""
    from cohortlens.simulate import SimulationParams, simulate

    out = OUT / "data" / f"features_sorted_{n_events}"
    done = out / "_DONE"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    total, i = 0, 0
    while total < n_events:
        n_l = min(chunk_learners, max(100, (n_events - total) // 200))
        ev = simulate(SimulationParams(n_learners=n_l, seed=1000 + i)).events
        ev = ev.set_column(
            ev.schema.get_field_index("learner_id"),
            "learner_id",
            pa.compute.binary_join_element_wise(f"c{i:04d}-", ev.column("learner_id"), ""),
        ).sort_by([("learner_id", "ascending"), ("ts", "ascending")])
        ev = ev.slice(0, min(ev.num_rows, n_events - total))
        pq.write_table(ev, out / f"part-{i:04d}.parquet", row_group_size=1 << 20)
        total += ev.num_rows
        i += 1
    done.write_text(str(total))
    return out


# ---------------------------------------------------------------- the three implementations
def ours_subset(table: pa.Table) -> dict[str, np.ndarray]:
    """Subset via the library: prepare + affinity kernel + engagement kernel + review pairs."""
    from cohortlens.features import AffinityParams
    from cohortlens.features._prep import encode_table, encoded_item_stats, prepare_encoded
    from cohortlens.features.affinity import compute_affinity
    from cohortlens.features.params import RetentionParams
    from cohortlens.features.retention import review_pairs
    from cohortlens.features.velocity import compute_engagement

    if "duration_s" in table.column_names:  # the subset's shares are count-based
        table = table.drop_columns(["duration_s"])
    enc = encode_table(table)
    items = encoded_item_stats(enc)
    prep = prepare_encoded(enc, items, release=True)
    aff = compute_affinity(prep, items, AffinityParams(miller_madow=False))
    eng = compute_engagement(prep, half_life_weeks=4.0)
    pairs = review_pairs(prep, RetentionParams(min_gap_hours=1.0))
    n = np.bincount(pairs.learner, minlength=prep.n_learners)
    with np.errstate(invalid="ignore", divide="ignore"):
        mr = np.bincount(pairs.learner, pairs.recalled, prep.n_learners) / n
        mg = np.bincount(pairs.learner, pairs.gap_days, prep.n_learners) / n
        h = mg / -np.log2(np.clip(mr, 0.01, 0.99))
    return {
        "learner_id": np.asarray(prep.learner_ids.to_numpy(zero_copy_only=False)),
        "entropy": aff.entropy_nats,
        "ema": eng.events_per_week,
        "mean_recall": mr,
        "mean_gap": mg,
        "half_life": h,
    }


def _duck_sql() -> str:
    return f"""
    WITH c AS (SELECT learner_id, domain, count(*)::DOUBLE n FROM ev GROUP BY ALL),
    t AS (SELECT learner_id, sum(n) tot FROM c GROUP BY ALL),
    ent AS (SELECT learner_id, -sum((n / tot) * ln(n / tot)) AS entropy
            FROM c JOIN t USING (learner_id) GROUP BY ALL),
    w AS (SELECT learner_id, (epoch_us(ts) - {MONDAY0_US}) // {WEEK_US} AS wk, count(*)::DOUBLE x
          FROM ev GROUP BY ALL),
    b AS (SELECT learner_id, min(wk) w0, max(wk) w1 FROM w GROUP BY ALL),
    ema AS (SELECT learner_id,
              sum({LAM} * pow(1 - {LAM}, w1 - wk) * x) / (1 - pow(1 - {LAM}, w1 - w0 + 1)) AS ema
            FROM w JOIN b USING (learner_id) GROUP BY learner_id, w0, w1),
    g AS (SELECT learner_id, epoch_us(ts) t, outcome,
            lag(epoch_us(ts)) OVER (PARTITION BY learner_id, item_id ORDER BY ts) pt
          FROM ev WHERE outcome IS NOT NULL),
    p AS (SELECT learner_id, avg(outcome) mean_recall, avg((t - pt) / 86400000000.0) mean_gap
          FROM g WHERE pt IS NOT NULL AND t - pt >= {MIN_GAP_US} GROUP BY ALL)
    SELECT ent.learner_id, entropy, ema, mean_recall, mean_gap,
           mean_gap / -log2(greatest(least(mean_recall, 0.99), 0.01)) AS half_life
    FROM ent JOIN ema USING (learner_id) LEFT JOIN p USING (learner_id)
    ORDER BY ent.learner_id
    """


def duckdb_subset(table: pa.Table) -> dict[str, np.ndarray]:
    """Subset as one DuckDB query over the Arrow table."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.register("ev", table)
    res = con.sql(_duck_sql()).to_arrow_table()
    con.close()
    return {c: res.column(c).to_numpy(zero_copy_only=False) for c in res.column_names} | {
        "learner_id": np.asarray(res.column("learner_id").to_pylist(), dtype=object)
    }


def pandas_subset(df: Any) -> dict[str, np.ndarray]:
    """Subset with idiomatic pandas groupby."""
    import pandas as pd

    c = df.groupby(["learner_id", "domain"], observed=True).size().rename("n").reset_index()
    c["p"] = c["n"] / c.groupby("learner_id")["n"].transform("sum")
    ent = (-(c["p"] * np.log(c["p"])).groupby(c["learner_id"]).sum()).rename("entropy")
    ts = df["ts"].astype("int64")
    if str(df["ts"].dtype).endswith("[ns, UTC]"):
        ts = ts // 1000
    wk = (ts - MONDAY0_US) // WEEK_US
    w = (
        pd.DataFrame({"learner_id": df["learner_id"], "wk": wk})
        .groupby(["learner_id", "wk"])
        .size()
        .rename("x")
        .reset_index()
    )
    w0 = w.groupby("learner_id")["wk"].transform("min")
    w1 = w.groupby("learner_id")["wk"].transform("max")
    num = (LAM * (1 - LAM) ** (w1 - w["wk"]) * w["x"]).groupby(w["learner_id"]).sum()
    den = (1 - (1 - LAM) ** (w1 - w0 + 1)).groupby(w["learner_id"]).first()
    ema = (num / den).rename("ema")
    g = pd.DataFrame(
        {"learner_id": df["learner_id"], "item_id": df["item_id"], "t": ts, "y": df["outcome"]}
    )
    g = g[g["y"].notna()].sort_values(["learner_id", "item_id", "t"], kind="stable")
    same = (g["learner_id"].to_numpy()[1:] == g["learner_id"].to_numpy()[:-1]) & (
        g["item_id"].to_numpy()[1:] == g["item_id"].to_numpy()[:-1]
    )
    gap = np.diff(g["t"].to_numpy())
    ok = same & (gap >= MIN_GAP_US)
    pr = pd.DataFrame(
        {
            "learner_id": g["learner_id"].to_numpy()[1:][ok],
            "y": g["y"].to_numpy()[1:][ok],
            "gap": gap[ok] / 86_400_000_000,
        }
    )
    agg = pr.groupby("learner_id").agg(mean_recall=("y", "mean"), mean_gap=("gap", "mean"))
    out = pd.concat([ent, ema], axis=1).join(agg).sort_index()
    out["half_life"] = out["mean_gap"] / -np.log2(out["mean_recall"].clip(0.01, 0.99))
    return {
        "learner_id": out.index.to_numpy(dtype=object),
        **{c: out[c].to_numpy(dtype=float) for c in out.columns},
    }


#: Largest relative difference allowed between two engines' subset columns.
TOLERANCE = 1e-9
_SUBSET_COLUMNS = ("entropy", "ema", "mean_recall", "mean_gap", "half_life")


class EngineDisagreementError(AssertionError):
    """Two engines computed different subset rows: the timings compare different work."""


def max_rel_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], peer: str = "peer") -> float:
    """Largest relative difference over the numeric columns; raises
    :class:`EngineDisagreementError` when the learners, a NaN pattern or a value (beyond
    :data:`TOLERANCE`) differ."""
    ids_a, ids_b = list(map(str, a["learner_id"])), list(map(str, b["learner_id"]))
    if ids_a != ids_b:
        pairs = zip(ids_a, ids_b, strict=False)
        first = next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(ids_a), len(ids_b)))
        raise EngineDisagreementError(
            f"ours and {peer} disagree on the learners: {len(ids_a)} vs {len(ids_b)} rows, "
            f"first difference at row {first}"
        )
    worst = 0.0
    for c in _SUBSET_COLUMNS:
        x, y = np.asarray(a[c], float), np.asarray(b[c], float)
        nan_x, nan_y = np.isnan(x), np.isnan(y)
        if not np.array_equal(nan_x, nan_y):
            i = int(np.flatnonzero(nan_x != nan_y)[0])
            raise EngineDisagreementError(
                f"ours and {peer} disagree on {c} of learner {ids_a[i]}: {float(x[i])!r} vs {float(y[i])!r}"
            )
        m = ~nan_x
        d = np.abs(x[m] - y[m]) / np.maximum(np.abs(y[m]), 1e-12)
        if d.size and float(d.max()) > TOLERANCE:
            i = int(np.flatnonzero(m)[int(d.argmax())])
            raise EngineDisagreementError(
                f"ours and {peer} disagree on {c} of learner {ids_a[i]}: {float(x[i])!r} vs {float(y[i])!r} "
                f"(relative difference {float(d.max()):.3g} > {TOLERANCE})"
            )
        worst = max(worst, float(d.max(initial=0.0)))
    return worst


# ---------------------------------------------------------------- measurement helpers
class TreeRss:
    """Samples the summed RSS of this process and its descendants (peak, MiB)."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _tree(self) -> list[int]:
        pids, frontier = [os.getpid()], [os.getpid()]
        while frontier:
            nxt = []
            for p in frontier:
                try:
                    kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
                except OSError:
                    kids = []
                nxt += [int(k) for k in kids]
            pids += nxt
            frontier = nxt
        return pids

    def _rss(self) -> float:
        total = 0
        for p in self._tree():
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(every_s)

    def __enter__(self) -> TreeRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _median_time(fn: Any, repeats: int) -> tuple[float, list[float], Any]:
    fn()  # warm-up (JIT caches, page cache)
    runs, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs, out


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary-encoded string columns decoded to plain strings."""
    return pa.table(
        {
            c: table.column(c).cast(pa.string())
            if pa.types.is_dictionary(table.column(c).type)
            else table.column(c)
            for c in table.column_names
        }
    )


def subset_case(
    n_events: int, repeats: int, with_pandas: bool, dictionary: bool = False
) -> dict[str, Any]:
    """Subset timings and agreement on about ``n_events`` events.

    ``dictionary``: the string columns are read from Parquet as Arrow dictionaries (as the
    pipeline reads them) and both engines get that same table; otherwise plain strings.
    """
    path = make_data(n_events)
    strings = ["learner_id", "domain", "item_id"]
    table = pq.read_table(path, read_dictionary=strings if dictionary else None)
    n = table.num_rows
    row: dict[str, Any] = {
        "case": "subset",
        "events": n,
        "input": "dictionary" if dictionary else "plain",
        "numpy_madvise_hugepage": os.environ.get("NUMPY_MADVISE_HUGEPAGE"),
    }
    t_ours, runs_ours, ours = _median_time(lambda: ours_subset(table), repeats)
    t_duck, runs_duck, duck = _median_time(lambda: duckdb_subset(table), repeats)
    row |= {
        "ours_s": round(t_ours, 3),
        "duckdb_s": round(t_duck, 3),
        "ours_events_per_s": round(n / t_ours),
        "duckdb_events_per_s": round(n / t_duck),
        "speedup_vs_duckdb": round(t_duck / t_ours, 2),
        "max_rel_diff_ours_duckdb": max_rel_diff(ours, duck, "DuckDB"),
        "runs": {"ours": runs_ours, "duckdb": runs_duck},
    }
    if with_pandas:
        df = _plain(table.select(["learner_id", "ts", "domain", "item_id", "outcome"])).to_pandas()
        t_pd, runs_pd, pdo = _median_time(lambda: pandas_subset(df), max(1, repeats - 2))
        row |= {
            "pandas_s": round(t_pd, 3),
            "pandas_events_per_s": round(n / t_pd),
            "max_rel_diff_ours_pandas": max_rel_diff(ours, pdo, "pandas"),
        }
        row["runs"]["pandas"] = runs_pd
    return row


def duckdb_subset_parquet(path: Path) -> int:
    """The subset SQL straight over the Parquet files (DuckDB's end-to-end peer figure)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    glob = str(path / "*.parquet")
    con.sql(f"CREATE VIEW ev AS SELECT * FROM read_parquet('{glob}')")
    n = con.sql(_duck_sql()).to_arrow_table().num_rows
    con.close()
    return int(n)


def full_case(
    n_events: int, repeats: int, n_workers: int, duckdb_peer: bool = True
) -> dict[str, Any]:
    """End-to-end build_features from Parquet: time and peak RSS of the process tree.

    With ``duckdb_peer`` the subset SQL over the same Parquet files is timed in the same run
    (DuckDB computes only the subset, so the ratio understates our advantage).
    """
    from cohortlens.features import build_features

    path = make_data(n_events)
    n = int((path / "_DONE").read_text())
    build_features(path, n_workers=n_workers)  # warm-up
    runs, peaks, learners = [], [], 0
    for _ in range(repeats):
        with TreeRss() as rss:
            t0 = time.perf_counter()
            feats = build_features(path, n_workers=n_workers)
            runs.append(time.perf_counter() - t0)
        peaks.append(rss.peak)
        learners = feats.num_rows
    t = statistics.median(runs)
    peer: dict[str, Any] = {}
    if duckdb_peer:
        t_duck, runs_duck, _ = _median_time(lambda: duckdb_subset_parquet(path), repeats)
        peer = {
            "duckdb_subset_e2e_s": round(t_duck, 2),
            "duckdb_subset_e2e_runs": [round(r, 2) for r in runs_duck],
            "duckdb_subset_events_per_s": round(n / t_duck),
            "ours_full_vs_duckdb_subset": round(t_duck / t, 2),
        }
    return peer | {
        "case": "full_e2e_parquet",
        "events": n,
        "learners": learners,
        "n_workers": n_workers,
        "seconds": round(t, 2),
        "runs": [round(r, 2) for r in runs],
        "events_per_s": round(n / t),
        "learners_per_s": round(learners / t),
        "peak_tree_rss_mib": round(max(peaks), 1),
    }


def run(
    sizes: tuple[int, ...] = (1_000_000, 10_000_000, 50_000_000),
    repeats: int = 3,
    n_workers: int = 2,
) -> list[dict[str, Any]]:
    """All cases (the ``benchmarks.run`` suite entry point)."""
    rows = []
    for n in sizes:
        if n >= 10_000_000:
            for dictionary in (True, False):  # the same table goes to every engine
                rows.append(subset_case(n, repeats, with_pandas=dictionary, dictionary=dictionary))
        rows.append(full_case(n, repeats, n_workers))
    return rows


def main() -> None:
    """CLI: print one JSON row per case."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000, 50_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=["subset", "full"], default=None)
    ap.add_argument("--no-pandas", action="store_true", help="skip the (slow) pandas subset")
    ap.add_argument(
        "--input",
        choices=["dictionary", "plain", "both"],
        default="both",
        help="subset input: string columns as Arrow dictionaries, plain strings, or both",
    )
    a = ap.parse_args()
    try:
        _main(a)
    except EngineDisagreementError as exc:
        raise SystemExit(f"bench_features: {exc}") from None


def _main(a: argparse.Namespace) -> None:
    for n in a.sizes:
        if a.only in (None, "subset") and n >= 10_000_000:
            forms = {"dictionary": [True], "plain": [False], "both": [True, False]}[a.input]
            for i, dictionary in enumerate(forms):  # pandas once: it gets plain strings anyway
                with_pd = i == 0 and not a.no_pandas
                row = subset_case(n, a.repeats, with_pandas=with_pd, dictionary=dictionary)
                print(json.dumps(row), flush=True)
        if a.only in (None, "full"):
            print(json.dumps(full_case(n, a.repeats, a.workers)), flush=True)


if __name__ == "__main__":
    main()
