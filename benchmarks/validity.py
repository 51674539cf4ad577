"""All validity checks in one command: ``python -m benchmarks.validity [--only features|experiments|cohorts]``.

Each suite is its own module (``validity_<suite>.py``) with a ``main()`` that prints its tables;
docs/VALIDITY.md quotes their output and names the command for each figure.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUITES = {
    "features": "benchmarks.validity_features",
    "experiments": "benchmarks.validity_experiments",
    "cohorts": "benchmarks.validity_cohorts",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(SUITES))
    args = parser.parse_args()
    for name in args.only or list(SUITES):
        try:
            module = importlib.import_module(SUITES[name])
        except ModuleNotFoundError:
            print(f"== {name}: not available in this checkout", flush=True)
            continue
        print(f"== {name}", flush=True)
        saved, sys.argv = sys.argv, [SUITES[name]]
        try:
            module.main()
        finally:
            sys.argv = saved


if __name__ == "__main__":
    main()
