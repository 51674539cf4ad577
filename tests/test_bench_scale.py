"""benchmarks/bench_scale.py: it runs every step at a tiny size and writes its table; its
summary arithmetic (slopes, ratios, flatness, projection) on exact inputs. No timing asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_scale import _fit, markdown, project, summarize, tree_rss_mib

REPO = Path(__file__).resolve().parents[1]
STEPS = ("simulate", "ingest", "peer_load", "features", "peer_features", "discover", "assign")


def _size(learners: int, events: int, seconds: dict[str, float], rss: float) -> dict:  # type: ignore[type-arg]
    return {
        "learners": learners,
        "events": events,
        "sizes": {
            "events_parquet_mib": events * 10 / (1 << 20),
            "store_mib": events * 20 / (1 << 20),
        },
        "steps": {
            k: {
                "seconds": s,
                "peak_rss_mib": rss,
                "peak_disk_mib": 100.0,
                "load_avg_1m": 1.0,
                "returncode": 0,
            }
            for k, s in seconds.items()
        },
        "spark": None,
    }


def test_fit_is_exact_on_a_line_and_through_the_origin_for_one_point() -> None:
    assert _fit([1e6, 3e6], [2.0 + 1e-6 * 1e6, 2.0 + 1e-6 * 3e6]) == (2.0, 1e-6)
    assert _fit([4e6], [2.0]) == (0.0, 0.5e-6)


def test_summary_ratios_slopes_flatness_and_goals() -> None:
    # 10 s fixed + 100 ns/event for every step; 240 events per learner
    def secs(n: int) -> dict[str, float]:
        return dict.fromkeys(STEPS, 10.0 + 100e-9 * n)

    small = _size(250_000, 60_000_000, secs(60_000_000), 1000.0)
    large = _size(1_000_000, 240_000_000, secs(240_000_000), 1100.0)
    large["steps"]["features"]["peak_rss_mib"] = 5000.0
    s = summarize([small, large], "3GiB")
    assert s["slopes"]["ingest"] == {"intercept_s": 10.0, "ns_per_event": 100.0}
    row = next(r for r in s["rows"] if r["learners"] == 1_000_000 and r["step"] == "ingest")
    assert row["ours_over_peer"] == 1.0
    assert row["wall_s"] == 34.0
    assert row["events_per_s"] == round(240e6 / 34.0)
    assert row["rate_pass"] is True
    feat = next(r for r in s["rows"] if r["learners"] == 1_000_000 and r["step"] == "features")
    assert feat["rss_pass"] is False
    assert feat["rate_pass"] is True
    assert s["rss_flatness"]["ingest"] == {"ratio": 1.1, "pass": True}
    assert s["rss_flatness"]["features"] == {"ratio": 5.0, "pass": False}
    # four end-to-end steps of 34 s each at 1M learners
    assert s["end_to_end_check"]["measured_at_1m_s"] == 136.0
    assert s["end_to_end_check"]["projected_at_1m_s"] == 136.0
    assert s["end_to_end_check"]["pass"] is True
    p = project([small, large], s["slopes"])
    assert p["events"] == 2_400_000_000
    assert p["wall_s"]["features"] == 250  # 10 + 100 ns × 2.4e9
    assert p["disk_gib"] == {"events_parquet": round(24e9 / (1 << 30), 1),
                             "store": round(48e9 / (1 << 30), 1)}  # fmt: skip
    assert "| 1,000,000 | 240,000,000 | features |" in markdown(s)


def test_negative_slopes_are_not_projected() -> None:
    small = _size(300, 70_000, dict.fromkeys(STEPS, 20.0), 300.0)
    large = _size(600, 140_000, dict.fromkeys(STEPS, 10.0), 300.0)
    s = summarize([small, large], None)
    assert s["end_to_end_check"]["projected_at_1m_s"] is None
    assert s["end_to_end_check"]["pass"] is None
    assert s["projection_10m"]["wall_s"]["features"] is None
    assert "n/a" in markdown(s)


def test_tree_rss_counts_a_child() -> None:
    code = "import time; print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"  # the interpreter is up
        own = tree_rss_mib(child.pid)
        assert own > 1.0
        assert tree_rss_mib(os.getpid()) > own
    finally:
        child.kill()
        child.wait()


def test_bench_scale_runs_every_step_and_writes_its_table(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTLENS_")}
    # As a user runs it: from the repository, no PYTHONPATH for benchmarks/, a relative scratch
    # directory (the steps run inside it, the peer's processes import benchmarks/ from there).
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    scratch = tmp_path / "scratch"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_scale", "--learners", "200",
         "--out-dir", str(tmp_path), "--scratch", os.path.relpath(scratch, REPO),
         "--memory-limit", "1GiB"],
        capture_output=True, text=True, check=False, cwd=REPO, env=env, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "scale.json").read_text())
    assert [r["step"] for r in summary["rows"]] == list(STEPS)
    assert all(r["learners"] == 200 and r["peak_rss_mib"] > 0 for r in summary["rows"])
    size = summary["sizes"][0]
    assert size["accepted"] == size["events"] > 0
    assert 0 < size["feature_rows"] <= 200
    table = (tmp_path / "scale.md").read_text()
    assert table.startswith("### scale")
    assert "| 200 |" in table
    assert "peer_features" in table
    assert not scratch.exists()  # deleted without --keep


def test_a_failed_step_is_reported_and_the_rest_still_summarized() -> None:
    small = _size(250_000, 60_000_000, dict.fromkeys(STEPS, 30.0), 1000.0)
    large = _size(1_000_000, 240_000_000, dict.fromkeys(STEPS[:3], 90.0), 1000.0)
    large["steps"]["features"] = {
        "seconds": 48.0,
        "peak_rss_mib": 19_000.0,
        "peak_disk_mib": 1.0,
        "load_avg_1m": 1.0,
        "returncode": -9,
    }
    large["failed"] = {"step": "features", "how": "killed by SIGKILL (out of memory?)"}
    for size in (small, large):
        for m in size["steps"].values():
            m.setdefault("returncode", 0)
    s = summarize([small, large], None)
    row = next(r for r in s["rows"] if r["learners"] == 1_000_000 and r["step"] == "features")
    assert row["failed"] == "killed by SIGKILL (out of memory?)"
    assert row["rss_pass"] is False
    assert set(s["slopes"]) == {"simulate", "ingest", "peer_load"}
    assert s["slopes"]["ingest"]["ns_per_event"] == 333.33  # (90 - 30) s / 180M events
    assert [e["learners"] for e in s["end_to_end"]] == [250_000]
    assert s["end_to_end_check"]["projected_at_1m_s"] is None
    assert s["failed"] == [
        {"learners": 1_000_000, "step": "features", "how": "killed by SIGKILL (out of memory?)"}
    ]
    table = markdown(s)
    assert "FAILED: killed by SIGKILL (out of memory?)" in table
    assert "1,000,000 learners: step features failed" in table
