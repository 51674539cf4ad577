"""Experiment designs served by ``GET /v1/experiments/{key}/assignment`` (a YAML file)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cohortlens.errors import InputError
from cohortlens.experiments.assignment import ExperimentDesign, Variant


class ExperimentEntry(BaseModel):
    """One experiment: ``name``, variant weights, and optional salt, traffic and targeting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    variants: dict[str, float] = Field(min_length=2)
    salt: str = ""
    traffic_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    target_cohorts: list[str] | None = None

    @field_validator("variants")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, w in v.items() if not w > 0]
        if bad:
            raise ValueError(f"variant weights must be > 0: {', '.join(bad)}")
        return v

    def design(self) -> ExperimentDesign:
        """The assignment design of :mod:`cohortlens.experiments.assignment`."""
        return ExperimentDesign(
            name=self.name,
            variants=tuple(Variant(k, w) for k, w in self.variants.items()),
            salt=self.salt,
            traffic_fraction=self.traffic_fraction,
            target_cohorts=frozenset(self.target_cohorts) if self.target_cohorts else None,
        )


class ExperimentsFile(BaseModel):
    """The file's top level: ``experiments: [...]``."""

    model_config = ConfigDict(extra="forbid")

    experiments: list[ExperimentEntry]


def load_experiments(path: Path | None) -> dict[str, ExperimentDesign]:
    """Designs by name; an empty mapping without a file. Errors name the field."""
    if path is None:
        return {}
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the experiments file ({exc})") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from exc
    try:
        parsed = ExperimentsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{path}: {where}: {first['msg']}") from exc
    designs: dict[str, ExperimentDesign] = {}
    for i, entry in enumerate(parsed.experiments):
        if entry.name in designs:
            raise InputError(f"{path}: experiments.{i}.name: {entry.name!r} appears twice")
        try:
            designs[entry.name] = entry.design()
        except ValueError as exc:
            raise InputError(f"{path}: experiments.{i}: {exc}") from exc
    return designs
