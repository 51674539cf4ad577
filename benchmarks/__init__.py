"""Benchmarks: each module measures cohortlens beside a peer implementation in the same run."""
