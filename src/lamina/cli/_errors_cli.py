"""Exit codes, the options every command shares (``--json``, ``--quiet``, ``--no-progress``),
``--help`` epilogs (examples, exit codes), and the one-line error handling every command uses.

Exit codes (README "CLI", docs/cli.md)::

    0    success
    1    the command ran and found problems (verify, fsck, diff --exit-code)
    2    usage or input error (bad flag, missing snapshot, corrupt manifest, refused operation)
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from .._errors import LaminaError

__all__ = ["EXIT_OK", "EXIT_INVALID", "EXIT_ERROR", "EXIT_INTERRUPTED", "one_line_errors", "cli_message",
           "json_option", "quiet_option", "progress_option", "epilog", "emit_json", "set_interrupt_hint"]

EXIT_OK = 0
EXIT_INVALID = 1  # verify / fsck / diff --exit-code found problems
EXIT_ERROR = 2  # bad input, missing snapshot, usage error (Click's own usage errors exit 2 too)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it

_HINT_KEY = "lamina.interrupt_hint"

# Library messages name Python keyword arguments, often with the flag beside them
# ("pass overwrite=True (CLI: --overwrite)"); a CLI user sees only the flag.
_CLI_HINT = re.compile(r"\b[a-z_]+=(?:[^\s()]+|\([^)]*\))\s+\(CLI: ([^)]+)\)")
_KWARGS = {
    "force=True": "--force",
    "overwrite=True": "--overwrite",
    "trust_pickle=True": "--trust-pickle",
    "to_format=": "--to ",
    "from_format=": "--from ",
}
_PHRASES = {
    "use lamina.open, lamina.push and lamina.pull with it":
        "`lamina inspect`, `lamina verify`, `lamina push`, `lamina pull` and `lamina convert` take hf:// locations",
}


def cli_message(text: str) -> str:
    """A library error message as a CLI user should read it: flags instead of Python keyword arguments."""
    text = _CLI_HINT.sub(lambda m: m.group(1), text)
    for old, new in {**_PHRASES, **_KWARGS}.items():
        text = text.replace(old, new)
    return text


def set_interrupt_hint(hint: str) -> None:
    """What to tell the user if the running command is interrupted (e.g. a push: re-run to resume)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.find_root().meta[_HINT_KEY] = hint


def emit_json(value: Any) -> None:
    """One JSON document on stdout (UTF-8, 2-space indent)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def one_line_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report lamina errors as one ``error: <Type>: <message>`` line on stderr and exit 2, never a
    traceback; under ``--json`` also ``{"error": {"type", "message", "exit_code"}}`` on stdout.
    Ctrl-C exits 130 with one line (and the command's hint, see :func:`set_interrupt_hint`)."""
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except LaminaError as exc:
            _fail(type(exc).__name__, cli_message(str(exc)), EXIT_ERROR, as_json)
        except KeyboardInterrupt:
            ctx = click.get_current_context(silent=True)
            hint = ctx.find_root().meta.get(_HINT_KEY) if ctx is not None else None
            _fail("Interrupted", "interrupted" + (f"; {hint}" if hint else ""), EXIT_INTERRUPTED, as_json)
    return wrapper


def _fail(kind: str, message: str, code: int, as_json: bool) -> None:
    message = " ".join(message.split())  # one line, whatever the message held
    if as_json:
        emit_json({"error": {"type": kind, "message": message, "exit_code": code}})
    click.echo(f"error: {kind}: {message}" if kind != "Interrupted" else f"error: {message}", err=True)
    sys.exit(code)


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout instead of text (schemas: docs/cli.md); "
                                "errors too, as {\"error\": {...}}.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (the exit code tells).")
progress_option = click.option("--no-progress", is_flag=True,
                               help="No progress bar (there is none anyway when stderr is not a terminal).")


def epilog(*examples: str, problems: str | None = None) -> str:
    """A ``--help`` epilog: examples, then this command's exit codes (``problems``: what exit 1 means)."""
    lines = ["\b", "Examples:", *(f"  {e}" for e in examples), "", "\b", "Exit codes:", "  0    success"]
    if problems:
        lines.append(f"  1    {problems}")
    lines += ["  2    usage or input error (one 'error: ...' line on stderr)", "  130  interrupted (Ctrl-C)"]
    return "\n".join(lines)
