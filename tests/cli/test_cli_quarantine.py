"""``cohortlens quarantine``: newest first, --reason / --source, a total, the raw text."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests._cli import run_cli

HEADER = "learner_id,ts,item_id,domain\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=120, columns=250)


def ok(*args: str) -> Any:
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """old.csv ingested first (2 rejects), then new.csv (3 rejects) in a second ingest."""
    d = tmp_path_factory.mktemp("quarantine")
    # Mostly good rows (a file rejected nearly whole may fail the ingest instead).
    good = "".join(f"g{n},2024-03-01T10:00:00Z,item{n},math\n" for n in range(8))
    (d / "old.csv").write_text(
        HEADER + "a,2024-03-01T10:00:00Z,i1,math\n"
        ",2024-03-01T10:00:00Z,i2,math\n"  # line 3: missing_learner_id
        "b,03/01/2024 10:00,i3,math\n" + good  # line 4: bad_timestamp
    )
    (d / "new.csv").write_text(
        HEADER + "c,yesterday,i4,math\n"  # line 2: bad_timestamp
        "d,2024-03-01T10:00:00Z,,math\n"  # line 3: missing_item_id
        "e,2024-13-01T10:00:00Z,i6,math\n" + good  # line 4: bad_timestamp
    )
    db = d / "s.duckdb"
    for name in ("old.csv", "new.csv"):
        r = cli("ingest", str(d / name), "--db", str(db))
        assert r.returncode == 0, r.stderr
    return db


def test_newest_first_with_a_total_and_the_raw_text(db: Path) -> None:
    got = ok("quarantine", "--db", str(db))
    assert (got["total"], got["shown"]) == (5, 5)
    rows = got["rows"]
    new, old = str(db.parent / "new.csv"), str(db.parent / "old.csv")
    assert [(r["source"], r["line"]) for r in rows] == [
        (new, 2),
        (new, 3),
        (new, 4),
        (old, 3),
        (old, 4),
    ]
    assert rows[0]["reason"] == "bad_timestamp"
    assert rows[0]["raw"] is not None
    assert "yesterday" in rows[0]["raw"]
    table = cli("quarantine", "--db", str(db))
    assert table.returncode == 0, table.stderr
    assert "showing 5 of 5, newest first" in table.stdout
    assert "raw" in table.stdout
    assert "yesterday" in table.stdout
    assert table.stdout.index("yesterday") < table.stdout.index("03/01/2024")


def test_limit_shows_how_many_more(db: Path) -> None:
    got = ok("quarantine", "--limit", "2", "--db", str(db))
    assert (got["total"], got["shown"], len(got["rows"])) == (5, 2, 2)
    table = cli("quarantine", "--limit", "2", "--db", str(db))
    assert "showing 2 of 5" in table.stdout
    assert "3 more" in table.stdout


def test_reason_and_source_filters(db: Path) -> None:
    bad_ts = ok("quarantine", "--reason", "bad_timestamp", "--db", str(db))
    assert bad_ts["total"] == 3
    assert {r["reason"] for r in bad_ts["rows"]} == {"bad_timestamp"}
    old = ok("quarantine", "--source", "old.csv", "--db", str(db))
    assert old["total"] == 2
    assert {Path(r["source"]).name for r in old["rows"]} == {"old.csv"}
    full = ok("quarantine", "--source", str(db.parent / "old.csv"), "--db", str(db))
    assert full["rows"] == old["rows"]
    both = ok("quarantine", "--reason", "bad_timestamp", "--source", "old.csv", "--db", str(db))
    assert [(Path(r["source"]).name, r["line"]) for r in both["rows"]] == [("old.csv", 4)]
    table = cli("quarantine", "--reason", "bad_timestamp", "--limit", "1", "--db", str(db))
    assert "quarantine (reason bad_timestamp): showing 1 of 3" in table.stdout


def test_no_match_says_so_and_lists_reason_codes_for_an_unknown_one(db: Path) -> None:
    none = ok("quarantine", "--source", "missing.csv", "--db", str(db))
    assert none == {"total": 0, "shown": 0, "rows": []}
    r = cli("quarantine", "--reason", "bad_timestmp", "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert "no quarantined rows (reason bad_timestmp)" in r.stdout
    assert "bad_timestamp" in r.stdout  # the codes that exist
