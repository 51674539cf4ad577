"""Defaults of the ingest limits, importable without pyarrow (the CLI's option defaults)."""

#: Default of ``ReadOptions.max_field_bytes``: 64 MiB.
DEFAULT_MAX_FIELD_BYTES = 1 << 26
#: Default of ``--max-reject-rate``: past half of a source's rows rejected, it fails whole.
DEFAULT_MAX_REJECT_RATE = 0.5
