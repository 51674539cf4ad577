"""How every command fails: one line on stderr and an exit code (docs/CLI.md); no traceback."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from cohortlens.errors import CohortlensError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_STORE = 0, 1, 2, 3

F = TypeVar("F", bound=Callable[..., Any])

_err = Console(stderr=True)


def handle_errors(*input_errors: type[BaseException]) -> Callable[[F], F]:
    """Decorator: cohortlens errors exit with their code; ``input_errors`` exit 2; others 1.

    ``COHORTLENS_DEBUG=1`` re-raises unexpected errors with their traceback.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except CohortlensError as exc:
                # Messages quote input (a raw row may hold "[/x]"): never read as markup.
                _err.print(
                    f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
                )
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                _err.print("interrupted; nothing was committed by the interrupted step")
                raise typer.Exit(130) from None
            except input_errors as exc:
                _err.print(
                    f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
                )
                raise typer.Exit(EXIT_INPUT) from None
            except Exception as exc:
                if os.environ.get("COHORTLENS_DEBUG"):
                    raise
                _err.print(
                    f"[bold red]internal error[/] ({type(exc).__name__}: {exc}). This is a bug "
                    "in cohortlens; rerun with COHORTLENS_DEBUG=1 for details and report it.",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(EXIT_INTERNAL) from None

        return wrapper  # type: ignore[return-value]

    return decorate
