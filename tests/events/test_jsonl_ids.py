"""JSON Lines: an object or array where an id belongs is rejected, not turned into an id."""

from __future__ import annotations

from pathlib import Path

from cohortlens.events.readers import detect_format, open_source


def test_nested_id_values_are_rejected_with_the_field_named(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(
        '{"learner_id": "a", "ts": "2024-01-01", "item_id": "i1"}\n'
        '{"learner_id": {"id": 7}, "ts": "2024-01-01", "item_id": "i1"}\n'
        '{"learner_id": "b", "ts": "2024-01-01", "item_id": ["x", "y"]}\n'
    )
    batches = list(open_source(path).batches())
    kept = [lid for b in batches for lid in b.table["learner_id"].to_pylist()]
    rejects = [r for b in batches for r in b.rejects.to_pylist()]
    assert kept == ["a"]
    assert sorted((r["line"], r["reason"]) for r in rejects) == [
        (2, "malformed_json"),
        (3, "malformed_json"),
    ]
    details = {r["line"]: r["detail"] for r in rejects}
    assert "learner_id is a JSON object or array" in details[2]
    assert "item_id is a JSON object or array" in details[3]


def test_gzipped_ndjson_is_detected(tmp_path: Path) -> None:
    assert detect_format(tmp_path / "events.ndjson.gz") == "jsonl"
