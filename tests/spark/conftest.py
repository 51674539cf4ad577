"""One local Spark session for the Spark tests (2 cores, few shuffle partitions, no UI)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")

#: pyspark warns about the pandas version whenever an Arrow/pandas UDF is defined.
PANDAS_WARNING = "ignore:PySpark does not yet fully support pandas:FutureWarning"
#: What a Spark subprocess needs to start small (spark-submit style arguments).
SUBMIT_ARGS = (
    "--master local[2] --driver-memory 1g --conf spark.ui.enabled=false "
    "--conf spark.sql.shuffle.partitions=4 pyspark-shell"
)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A ``local[2]`` session shared by every Spark test module (the JVM starts once)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("cohortlens-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.session.timeZone", "America/New_York")  # not UTC, on purpose
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sim_events() -> pa.Table:
    """A small simulated platform (about 15k events of 160 learners over 8 weeks)."""
    from cohortlens.simulate import SimulationParams, simulate

    return simulate(SimulationParams(n_learners=160, n_weeks=8, seed=11)).events


@pytest.fixture(scope="session")
def few_learners(sim_events: pa.Table) -> pa.Table:
    """The events of 40 of the simulated learners."""
    ids = sim_events.column("learner_id").unique()[:40]
    return sim_events.filter(pc.is_in(sim_events.column("learner_id"), ids))


@pytest.fixture(scope="session")
def events_dir(tmp_path_factory: pytest.TempPathFactory, sim_events: pa.Table) -> Path:
    """The simulated events as a Parquet directory of two files (learners span both)."""
    d = tmp_path_factory.mktemp("spark-events") / "events.parquet"
    d.mkdir()
    half = sim_events.num_rows // 2
    pq.write_table(sim_events.slice(0, half), d / "part-0.parquet", row_group_size=5000)
    pq.write_table(sim_events.slice(half), d / "part-1.parquet", row_group_size=5000)
    return d
