"""Public names that load their module on first use (PEP 562), so the CLI starts without NumPy,
Arrow or DuckDB until a command needs them (docs/DESIGN.md, "Import rules")."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(
    package: str, modules: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__``: ``name`` comes from ``package.modules[name]``, then is cached."""

    def __getattr__(name: str) -> Any:  # noqa: N807 (the PEP 562 hook)
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return __getattr__
