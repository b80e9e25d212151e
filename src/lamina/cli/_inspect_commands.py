"""``lamina inspect`` and ``lamina verify``: what a snapshot holds, and whether its bytes are intact."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from .._errors import FormatError, IntegrityError
from ._errors_cli import (
    EXIT_INVALID,
    emit_json,
    epilog,
    json_option,
    one_line_errors,
    progress_option,
    quiet_option,
)

__all__ = ["inspect", "verify"]


@click.command(epilog=epilog(
    "lamina inspect out/model",
    "lamina inspect out/model --json | jq .training",
    "lamina inspect s3://bucket/models/tiny@v1.0",
    "lamina inspect model.safetensors --tensors --filter '*.attn.*'",
))
@click.argument("path")
@json_option
@click.option("--all", "show_all", is_flag=True,
              help="Tables: every optimizer hyperparameter (default: only those differing from the class defaults).")
@click.option("--tensors", is_flag=True,
              help="List every tensor: name, layer, dtype, shape, bytes, tied-to. Also works on a .safetensors "
                   "file or a Hugging Face directory (model.safetensors, its sharded index, or a PEFT adapter).")
@click.option("--filter", "patterns", multiple=True, metavar="GLOB",
              help="With --tensors (implied): only tensors whose name matches GLOB (fnmatch: * also crosses "
                   "dots, case-sensitive; quote it). Repeat for any of several.")
@one_line_errors
def inspect(path: str, as_json: bool, show_all: bool, tensors: bool, patterns: tuple[str, ...]) -> None:
    """Show a snapshot's info, training state, layers, optimizer and files (reads the manifest only).

    PATH is a snapshot directory, a URI (s3://, https://), REPO@REF or hf://ORG/NAME[@REV]. Sizes
    are in binary units (1 KiB = 1024 bytes). On a terminal: tables; piped: plain "key: value"
    and tab-separated lines. With --tensors, one row per tensor instead; --json then prints a list
    of objects with keys name, layer, dtype, shape, bytes, file, tied_to (see docs/inspect.md).
    """
    import lamina
    from lamina.snapshot import summary as summaries

    tensors = tensors or bool(patterns)
    foreign = _is_foreign(path)
    if not tensors:
        _refuse_file(path)
        if foreign:
            raise FormatError(f"{path} is not a lamina snapshot but safetensors weights: `lamina inspect {path} "
                              f"--tensors` lists them, `lamina convert` converts them")
    if tensors:
        rows = _foreign_rows(path) if foreign else summaries.tensor_rows(lamina.open(path))
        rows = summaries.filter_rows(rows, patterns)
        if as_json:
            emit_json(rows)
        else:
            from ._render import render_tensors

            render_tensors(rows, path)
        return
    summary = summaries.summarize(lamina.open(path))
    if as_json:
        emit_json(summary)
    else:
        from ._render import render_summary

        render_summary(summary, show_all=show_all)


def _is_foreign(path: str) -> bool:
    """A local safetensors file, or a directory that format detection calls a Hugging Face safetensors
    directory (a lamina snapshot stays a snapshot, even one carrying an HF index)."""
    from lamina.converters._detect import detect_source

    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".safetensors":
            return True  # broken ones too: the safetensors reader names what is wrong
        try:
            return detect_source(p) == "safetensors"
        except FormatError:
            return False
    if not p.is_dir():
        return False

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


def _refuse_file(path: str) -> None:
    """A local file is not a snapshot (a snapshot is a directory): say what it is and what to run."""
    p = Path(path)
    if not p.is_file():
        return
    from lamina.converters._detect import detect_source

    try:
        kind = detect_source(p)
    except FormatError:
        kind = None
    for root in list(p.parents)[:3]:
        if (root / "manifest.msgpack").is_file():
            also = f"; `lamina inspect {path} --tensors` lists this file's tensors" if kind == "safetensors" else ""
            raise FormatError(f"{path} is a file inside the snapshot {root}: `lamina inspect {root}` shows the "
                              f"snapshot{also}")
    if kind == "safetensors":
        raise FormatError(f"{path} is not a lamina snapshot but safetensors weights: `lamina inspect {path} --tensors` "
                          f"lists them, `lamina convert` converts them")
    if kind is not None:
        kind = {"torch": "a torch checkpoint", "onnx": "an ONNX model", "keras": "a Keras model",
                "tf": "a TensorFlow checkpoint"}.get(kind, f"a {kind} file")
        raise FormatError(f"{path} is {kind}, not a lamina snapshot (a directory with manifest.msgpack); "
                          f"`lamina convert {path} DIR` converts it")
    raise FormatError(f"{path} is a file, not a lamina snapshot (a directory with manifest.msgpack)")


@click.command(epilog=epilog(
    "lamina verify out/model",
    "lamina verify models/tiny@v1.0 --json",
    "lamina verify hf://org/name@main -q && echo intact",
    problems="verification found bad files (each listed on stderr, or under \"problems\" with --json)",
))
@click.argument("path")
@json_option
@quiet_option
@progress_option
@one_line_errors
def verify(path: str, as_json: bool, quiet: bool, no_progress: bool) -> None:
    """Check every file's size and sha256 and every shard header against the manifest.

    Exits 0 when everything matches, 1 listing the bad files otherwise.
    """
    import lamina
    from lamina.api.convert import watch_reads

    from ._progress import progress_bar, showing_progress

    _refuse_file(path)
    art = lamina.open(path)
    total = sum(f.size for f in art.manifest.files)
    problems: list[tuple[str, str]] = []
    with progress_bar("verifying", showing_progress(no_progress, quiet or as_json)) as progress:
        try:
            if progress is None:
                art.verify()
            else:
                with watch_reads(art._store.source(), total, progress):
                    art.verify()
        except IntegrityError as exc:
            problems = list(exc.files)
    if as_json:
        emit_json({"location": str(path), "ok": not problems, "files": len(art.manifest.files), "bytes": total,
                   "problems": [{"path": f, "reason": why} for f, why in problems]})
    elif problems:
        for file, why in problems:
            click.echo(f"FAILED {file}: {why}", err=True)
        click.echo(f"{len(problems)} file(s) failed verification in {path}", err=True)
    elif not quiet:
        click.echo(f"OK {path}: {len(art.manifest.files)} files verified")
    if problems:
        sys.exit(EXIT_INVALID)
