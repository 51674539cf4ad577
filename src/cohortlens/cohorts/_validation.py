"""Declarative parameter constraints, checked all at once (scikit-learn's ``_parameter_constraints``
pattern, with our error type and wording).

An estimator declares ``_parameter_constraints = {"name": [constraint, ...]}``; a value is
valid when it satisfies at least one of its constraints (``None`` as a constraint allows
``None``). :func:`validate_params` raises one :class:`~cohortlens.errors.InputError` naming
every invalid parameter, its value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (``Integral`` or ``Real``) between ``left`` and ``right``.

    ``closed`` says which ends belong to the interval; ``None`` ends are unbounded.
    Booleans are never numbers here.
    """

    kind: type
    left: float | None
    right: float | None
    closed: Literal["left", "right", "both", "neither"] = "both"

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` lies in the interval and has the right kind."""
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        x = float(value)  # type: ignore[arg-type]  # a number: checked just above
        if math.isnan(x):
            return False
        lo_ok = (
            self.left is None
            or x > self.left
            or (x == self.left and self.closed in ("left", "both"))
        )
        hi_ok = (
            self.right is None
            or x < self.right
            or (x == self.right and self.closed in ("right", "both"))
        )
        return bool(lo_ok and hi_ok)

    def describe(self) -> str:
        """``an int >= 1``, ``a number in [0, 0.25)`` and so on."""
        noun = "an int" if self.kind is Integral else "a number"
        if self.right is None and self.left is not None:
            op = ">=" if self.closed in ("left", "both") else ">"
            return f"{noun} {op} {self.left:g}"
        if self.left is None and self.right is not None:
            op = "<=" if self.closed in ("right", "both") else "<"
            return f"{noun} {op} {self.right:g}"
        lb = "[" if self.closed in ("left", "both") else "("
        rb = "]" if self.closed in ("right", "both") else ")"
        return f"{noun} in {lb}{self.left:g}, {self.right:g}{rb}"


@dataclass(frozen=True)
class InstanceOf:
    """An instance of ``kind``."""

    kind: type
    name: str

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is an instance of ``kind``."""
        return isinstance(value, self.kind)

    def describe(self) -> str:
        """The expected type, in words."""
        return self.name


@dataclass(frozen=True)
class NonEmpty:
    """A non-empty sequence (not a string)."""

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is a sequence with at least one element."""
        return isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0

    def describe(self) -> str:
        """In words."""
        return "a non-empty sequence"


Constraint = Interval | InstanceOf | NonEmpty | None

#: Integer and real number kinds for :class:`Interval` (``numbers`` ABCs: NumPy scalars count).
INT: type = Integral
REAL: type = Real


def validate_params(
    owner: str, params: Mapping[str, Any], constraints: Mapping[str, Sequence[Constraint]]
) -> list[str]:
    """The problems of ``params`` against ``constraints``, one string per invalid parameter
    (``"n_init == 0, must be an int >= 1"``), in declaration order."""
    problems = []
    for name, allowed in constraints.items():
        value = params[name]
        if any(c is None and value is None for c in allowed):
            continue
        if any(c is not None and c.accepts(value) for c in allowed):
            continue
        options = [("None" if c is None else c.describe()) for c in allowed]
        problems.append(f"{name} == {value!r}, must be {' or '.join(options)}")
    return problems
