"""``lamina inspect`` and ``lamina verify``: what a snapshot holds, and whether its bytes are intact."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from .._errors import FormatError, IntegrityError
from ._errors_cli import EXIT_INVALID, one_line_errors

__all__ = ["inspect", "verify"]


@click.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
@click.option("--tensors", is_flag=True,
              help="List every tensor: name, layer, dtype, shape, bytes, tied-to. Also works on a .safetensors "
                   "file or a Hugging Face directory (model.safetensors, its sharded index, or a PEFT adapter).")
@click.option("--filter", "patterns", multiple=True, metavar="GLOB",
              help="With --tensors (implied): only tensors whose name matches GLOB (fnmatch: * also crosses "
                   "dots, case-sensitive; quote it). Repeat for any of several.")
@one_line_errors
def inspect(path: str, as_json: bool, tensors: bool, patterns: tuple[str, ...]) -> None:
    """Show a snapshot's info, training state, layers, optimizer and files (reads the manifest only).

    With --tensors, one row per tensor instead; --json then prints a list of objects with keys
    name, layer, dtype, shape, bytes, file, tied_to (see docs/inspect.md).
    """
    import lamina
    from lamina.snapshot import summary as summaries

    tensors = tensors or bool(patterns)
    foreign = _is_foreign(path)
    if foreign and not tensors:
        raise FormatError(f"{path} is not a lamina snapshot but safetensors weights: `lamina inspect {path} --tensors` "
                          f"lists them, `lamina convert` converts them")
    if tensors:
        rows = _foreign_rows(path) if foreign else summaries.tensor_rows(lamina.open(path))
        rows = summaries.filter_rows(rows, patterns)
        if as_json:
            click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        else:
            from ._render import render_tensors

            render_tensors(rows, path)
        return
    summary = summaries.summarize(lamina.open(path))
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    else:
        from ._render import render_summary

        render_summary(summary)


def _is_foreign(path: str) -> bool:
    """A local file, or a directory that format detection calls a Hugging Face safetensors
    directory (a lamina snapshot stays a snapshot, even one carrying an HF index)."""
    p = Path(path)
    if p.is_file():
        return True
    if not p.is_dir():
        return False
    from lamina.converters._detect import detect_source

    try:
        return detect_source(p) == "hf"
    except FormatError:  # no format detection knows (a repository, say): lamina.open decides
        return False


def _foreign_rows(path: str) -> list[dict[str, Any]]:
    """The ``--tensors`` rows of a .safetensors file or Hugging Face directory, from the HF
    converter's header-only listing (ties from config.json), in the snapshot rows' schema, sorted
    by name with numbers compared as numbers (a file's own order is by dtype size)."""
    from lamina.converters.hf import describe

    rows = [{"name": r["name"], "layer": r["layer"], "dtype": r["dtype"], "shape": r["shape"], "bytes": r["nbytes"],
             "file": r["file"], "tied_to": r["tied_to"]} for r in describe(path)]
    return sorted(rows, key=lambda r: [(0, int(part)) if part.isdigit() else (1, part)
                                       for part in re.split(r"(\d+)", r["name"])])


@click.command()
@click.argument("path")
@one_line_errors
def verify(path: str) -> None:
    """Check every file's size and sha256 and every shard header against the manifest.

    Exits 0 when everything matches, 1 listing the bad files otherwise.
    """
    import lamina

    art = lamina.open(path)
    try:
        art.verify()
    except IntegrityError as exc:
        for file, why in exc.files:
            click.echo(f"FAILED {file}: {why}", err=True)
        click.echo(f"{len(exc.files)} file(s) failed verification in {path}", err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"OK {path}: {len(art.manifest.files)} files verified")
