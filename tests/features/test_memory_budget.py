"""The memory budget (``--memory-limit``): the spill path from the store gives the in-memory
rows; a budget below one learner's need is refused with the minimum; a full spill disk fails
with exit 3, naming the path, and leaves the store as it was."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests._cli import run_cli
from tests.features.featsynth import Synth

from cohortlens.budget import SCAN_DUCKDB_SHARE, MemoryBudget, format_bytes, parse_bytes
from cohortlens.errors import InputError, SpillSpaceError
from cohortlens.events.ingest import ingest
from cohortlens.features import build_features
from cohortlens.features import pipeline as pl
from cohortlens.store import DuckDBStore


def _by_learner(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table, [("learner_id", "ascending")]))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, synth: Synth) -> Path:
    d = tmp_path_factory.mktemp("budget")
    events = d / "events.parquet"
    pq.write_table(synth.events, events, row_group_size=5000)
    db = d / "store.duckdb"
    with DuckDBStore(db) as store:
        ingest(store, [events])
    return db


@pytest.fixture
def heavy_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan as if every event weighed a thousand: 33K test events then need the budget that
    33M events would, so a budget of a few hundred MiB forces the spill path and many buckets
    (the fixed memory of a process alone is more than these events need)."""
    monkeypatch.setattr(pl, "IN_MEMORY_BYTES_PER_EVENT", 1000 * pl.IN_MEMORY_BYTES_PER_EVENT)
    monkeypatch.setattr(pl, "BUCKET_BYTES_PER_EVENT", 1000 * pl.BUCKET_BYTES_PER_EVENT)


def _spilling_budget(total: int) -> tuple[MemoryBudget, pl.SpillPlan]:
    """The smallest budget (1 MiB steps) whose plan spills ``total`` events into 8-32 buckets."""
    limit = 256 << 20
    while True:
        budget = MemoryBudget(limit, duckdb_share=SCAN_DUCKDB_SHARE)
        plan = pl.plan_for_budget(pl.pipeline_bytes(budget), total, 1)
        if plan.in_memory_max_events < total and 8 <= plan.n_partitions <= 32:
            return budget, plan
        limit += 1 << 20
        assert limit < 4 << 30, "no budget spills these events into 8-32 buckets"


def test_spill_path_from_the_store_at_a_small_budget_equals_the_in_memory_path(
    store_path: Path, tmp_path: Path, heavy_events: None
) -> None:
    with DuckDBStore(store_path, read_only=True) as store:
        n = store.count_events()
        in_memory = build_features(
            store.events_reader(sort=False, columns=pl.KERNEL_COLUMNS),
            n_workers=1,
            total_events=n,
            in_memory_max_events=n,
        )
        budget, plan = _spilling_budget(n)
        assert plan.n_partitions >= 8
        assert plan.flush_rows < n
        spill_dir = tmp_path / "spill"
        seen: list[str] = []
        spilled = build_features(
            store.events_reader(sort=False, batch_rows=plan.batch_rows, columns=pl.KERNEL_COLUMNS),
            n_workers=1,
            total_events=n,
            budget=MemoryBudget(budget.limit_bytes, spill_dir, budget.duckdb_share),
            on_progress=lambda step, done, total, unit: seen.append(step),
        )
    # the spill path ran (its partitions reported), in the budget's directory, left clean
    assert "learner partitions" in seen
    assert spill_dir.is_dir()
    assert not any(spill_dir.iterdir())
    assert in_memory.num_rows == spilled.num_rows == 200
    assert _by_learner(spilled).equals(_by_learner(in_memory))


def test_the_plan_follows_the_budget_not_the_input_size() -> None:
    small = pl.plan_for_budget(2 << 30, 60_000_000, 2)
    large = pl.plan_for_budget(2 << 30, 240_000_000, 2)
    # the same bucket size and buffers; four times the events, four times the buckets
    assert small.flush_rows <= large.flush_rows * 4 + 4096
    assert large.n_partitions == pytest.approx(4 * small.n_partitions, rel=0.05)
    assert small.in_memory_max_events == large.in_memory_max_events < 60_000_000
    per_bucket = 240_000_000 / large.n_partitions * pl.BUCKET_BYTES_PER_EVENT
    assert 2 * (per_bucket + pl.PROCESS_FIXED_BYTES) + pl.PROCESS_FIXED_BYTES <= 2 << 30


def test_the_minimum_budget_comes_from_the_largest_learner() -> None:
    budget = MemoryBudget(parse_bytes("700MiB", "--memory-limit"), duckdb_share=0.125)
    total, largest = 500_000_000, 2_000_000
    with pytest.raises(InputError) as err:
        pl.check_budget(budget, total, largest, 2)
    need = pl.minimum_budget_bytes(total, largest, 2)
    assert need == 3 * pl.PROCESS_FIXED_BYTES + max(
        2 * largest * pl.BUCKET_BYTES_PER_EVENT + 64 * 4096 * pl.SPILL_BYTES_PER_EVENT,
        -(-2 * largest * pl.BUCKET_BYTES_PER_EVENT * 4 // 3),
    )
    minimum = pl.limit_for(need, 0.125)
    message = str(err.value)
    assert f"at least {format_bytes(minimum)}" in message
    assert "2,000,000 events" in message
    assert "--workers 1" in message
    # the minimum it names is enough, and 1 MiB less is not
    pl.check_budget(MemoryBudget(minimum, duckdb_share=0.125), total, largest, 2)
    assert pl.pipeline_bytes(MemoryBudget(minimum - (1 << 20), duckdb_share=0.125)) < need


def test_cli_memory_limit_below_one_learner_exits_2_with_the_minimum(store_path: Path) -> None:
    r = run_cli("features", "--db", str(store_path), "--memory-limit", "64MiB", "--json")
    assert r.returncode == 2, r.stderr
    assert "--memory-limit 64.0 MiB is below what these events need: at least" in r.stderr
    with DuckDBStore(store_path, read_only=True) as store:
        n, largest = store.count_events(), store.max_learner_events()
        assert store.feature_runs() == []
    minimum = pl.limit_for(pl.minimum_budget_bytes(n, largest, 2), SCAN_DUCKDB_SHARE)
    assert f"at least {format_bytes(minimum)}" in r.stderr
    r = run_cli("features", "--db", str(store_path), "--memory-limit", "lots")
    assert r.returncode == 2
    assert "--memory-limit 'lots': expected a positive number of bytes" in r.stderr


def test_cli_accepts_the_minimum_it_named(store_path: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.duckdb"
    db.write_bytes(store_path.read_bytes())
    with DuckDBStore(db, read_only=True) as store:
        n, largest = store.count_events(), store.max_learner_events()
    minimum = pl.limit_for(pl.minimum_budget_bytes(n, largest, 1), SCAN_DUCKDB_SHARE)
    r = run_cli(
        "features", "--db", str(db), "--memory-limit", str(minimum), "--workers", "1", "--json"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["learners"] == 200


def test_a_full_spill_disk_fails_naming_the_path(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, heavy_events: None
) -> None:
    """ENOSPC at the OS boundary (every spill file write), in the library."""

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.pa, "OSFile", full)
    with DuckDBStore(store_path, read_only=True) as store:
        n = store.count_events()
        budget, _plan = _spilling_budget(n)
        with pytest.raises(SpillSpaceError) as err:
            build_features(
                store.events_reader(sort=False, columns=pl.KERNEL_COLUMNS),
                n_workers=1,
                total_events=n,
                budget=MemoryBudget(budget.limit_bytes, tmp_path / "spill", budget.duckdb_share),
            )
    assert err.value.exit_code == 3
    assert str(tmp_path / "spill") in str(err.value)
    assert "No space left on device" in str(err.value)
    assert not any((tmp_path / "spill").iterdir())  # the work directory is removed


def _full_tmpfs(path: Path) -> bool:
    """Mount a 1 MiB tmpfs at ``path`` (root only); False when that is not possible."""
    import os
    import subprocess

    path.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_cli_full_temp_disk_exits_3_and_the_store_is_unchanged(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``features --temp-dir`` on a full disk: a real 1 MiB tmpfs when this runs as root,
    else ENOSPC injected at the OS boundary (every spill file write). The command runs in
    this process (so the in-memory path can be ruled out: these events would fit it)."""
    import subprocess

    from typer.testing import CliRunner

    from cohortlens.cli.main import app

    spill = tmp_path / "tiny"
    mounted = _full_tmpfs(spill)
    if not mounted:

        def full(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(pl.pa, "OSFile", full)
    monkeypatch.setattr(pl, "IN_MEMORY_BYTES_PER_EVENT", 1 << 40)  # always spill
    db = tmp_path / "copy.duckdb"
    db.write_bytes(store_path.read_bytes())
    with DuckDBStore(db, read_only=True) as store:
        n = store.count_events()
    try:
        r = CliRunner().invoke(
            app,
            ["features", "--db", str(db), "--workers", "1", "--temp-dir", str(spill)],
        )
        assert r.exit_code == 3, r.output
        assert f"cannot write spill files in {spill}" in " ".join(r.output.split())
        assert "Traceback" not in r.output
        with DuckDBStore(db, read_only=True) as store:
            assert store.feature_runs() == []
            assert store.count_events() == n
        assert not any(spill.iterdir())
    finally:
        if mounted:
            # a plain umount fails while a spill file is still open: none may be
            done = subprocess.run(["umount", str(spill)], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(spill)], check=False)
            assert done.returncode == 0, done.stderr
