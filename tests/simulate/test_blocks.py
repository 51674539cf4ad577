"""The simulator in learner blocks: streams per (seed, block), output independent of memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests._cli import run_cli

from cohortlens.budget import MemoryBudget
from cohortlens.errors import InputError
from cohortlens.simulate import (
    SimulationParams,
    _model,
    simulate,
    simulate_to_parquet,
    write_simulation,
)

SMALL_BLOCK = 64


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Blocks of 64 learners, so that a test population spans several blocks."""
    monkeypatch.setattr(_model, "BLOCK_LEARNERS", SMALL_BLOCK)
    return SMALL_BLOCK


def test_blocks_number_learners_and_events_in_order(small_blocks: int) -> None:
    p = SimulationParams(n_learners=200, n_weeks=6, seed=5)
    s = simulate(p)
    ids = s.truth.column("learner_id").to_pylist()
    assert ids == [f"u{i:03d}" for i in range(200)]
    assert s.outcomes.column("learner_id").to_pylist() == ids
    assert s.events.column("event_id").to_pylist() == [
        f"sim5-{k}" for k in range(s.events.num_rows)
    ]
    # Block-major, sorted by time inside each block.
    learner = np.array([int(x[1:]) for x in s.events.column("learner_id").to_pylist()])
    block = learner // small_blocks
    assert (np.diff(block) >= 0).all()
    ts = s.events.column("ts").cast("int64").to_numpy()
    same = np.diff(block) == 0
    assert (np.diff(ts)[same] >= 0).all()
    counts = np.bincount(learner, minlength=200)
    np.testing.assert_array_equal(s.truth.column("n_events").to_numpy(), counts)
    assert set(np.unique(block)) == {0, 1, 2, 3}


def test_first_block_is_the_population_of_one_block(small_blocks: int) -> None:
    """Block 0 draws from the streams a one-block run uses (and earlier versions used)."""
    whole = simulate(SimulationParams(n_learners=200, n_weeks=4, seed=9))
    alone = simulate(SimulationParams(n_learners=small_blocks, n_weeks=4, seed=9))
    assert whole.truth.slice(0, small_blocks).equals(alone.truth)
    assert whole.events.slice(0, alone.events.num_rows).equals(alone.events)
    assert whole.items.equals(alone.items)


def test_blocks_draw_from_their_own_streams(small_blocks: int) -> None:
    s = simulate(SimulationParams(n_learners=2 * small_blocks, n_weeks=2, seed=3))
    first = s.truth.slice(0, small_blocks).column("ability0").to_numpy()
    second = s.truth.slice(small_blocks).column("ability0").to_numpy()
    assert not np.array_equal(first, second)


def test_streamed_files_do_not_depend_on_the_budget(small_blocks: int, tmp_path: Path) -> None:
    p = SimulationParams(n_learners=1000, n_weeks=26, seed=2, keep_event_truth=True)
    small = simulate_to_parquet(p, tmp_path / "small", budget=MemoryBudget(512 << 20))
    default = simulate_to_parquet(p, tmp_path / "default")
    in_memory = write_simulation(simulate(p), tmp_path / "memory")
    assert small.n_events == default.n_events > 200_000
    for name in ("events", "event_truth", "truth", "outcomes", "items"):
        table = pq.read_table(default.paths[name])
        assert pq.read_table(small.paths[name]).equals(table), name
        assert pq.read_table(in_memory[name]).equals(table), name
    # The small budget wrote smaller row groups, the default pq.write_table's 1 Mi rows.
    assert pq.ParquetFile(small.paths["events"]).metadata.num_row_groups == 2
    assert pq.ParquetFile(default.paths["events"]).metadata.num_row_groups == 1
    assert pc.sum(pq.read_table(default.paths["truth"]).column("n_events")).as_py() == (
        default.n_events
    )


def test_row_groups_follow_the_budget() -> None:
    assert _model.simulate_row_group_rows(MemoryBudget(3 << 30)) == 1 << 20
    assert _model.simulate_row_group_rows(MemoryBudget(512 << 20)) < 1 << 20
    with pytest.raises(InputError, match=r"at least 512\.0 MiB"):
        _model.simulate_row_group_rows(MemoryBudget(100 << 20))


@pytest.mark.parametrize(
    ("value", "message"),
    [("100MB", "use at least 512.0 MiB"), ("lots", "expected a positive number of bytes")],
)
def test_cli_rejects_a_bad_memory_limit(value: str, message: str, tmp_path: Path) -> None:
    res = run_cli(
        "simulate", "--learners", "10", "--out", str(tmp_path / "s"), "--memory-limit", value
    )
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "s").exists()


def test_cli_simulate_with_a_budget_writes_the_files(tmp_path: Path) -> None:
    res = run_cli(
        "simulate", "--learners", "30", "--weeks", "3", "--seed", "4", "--out",
        str(tmp_path / "s"), "--memory-limit", "1GiB", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    events = pq.read_table(tmp_path / "s" / "events.parquet")
    truth = pq.read_table(tmp_path / "s" / "truth.parquet")
    assert truth.num_rows == 30
    assert events.num_rows == pc.sum(truth.column("n_events")).as_py()
