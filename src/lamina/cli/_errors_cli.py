"""Exit codes and the one-line error handling every command shares."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from .._errors import LaminaError

__all__ = ["EXIT_INVALID", "EXIT_ERROR", "one_line_errors"]

EXIT_INVALID = 1  # verify / fsck found problems
EXIT_ERROR = 2  # bad input, missing snapshot, usage error


def one_line_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report lamina errors as one line on stderr with a non-zero exit, never a traceback."""
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LaminaError as exc:
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(EXIT_ERROR)
    return wrapper
