"""lamina.cli: the ``lamina`` command line — convert here; inspect and verify in
``_inspect_commands``, repository commands in ``_repo_commands``, checkpoints in
``_checkpoint_commands``; one-line errors and exit codes in ``_errors_cli``.

May import: the public façade (``lamina``) and anything below it; nothing imports the CLI."""

from __future__ import annotations

import sys

import click

from .._version import __version__
from ._checkpoint_commands import checkpoints
from ._errors_cli import one_line_errors
from ._inspect_commands import inspect, verify
from ._repo_commands import register

__all__ = ["main", "cli"]

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="lamina")
def cli() -> None:
    """lamina: per-layer, versioned model snapshots."""


@cli.command()
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option("--from", "from_format",
              type=click.Choice(["lamina", "torch", "keras", "onnx", "tf", "hf", "safetensors"]),
              help="Source format (default: detected from the content); tf: a TensorFlow checkpoint "
                   "(directory, prefix, .index) or SavedModel, read only; hf: a Hugging Face safetensors "
                   "directory or hf://ORG/NAME[@REV]; safetensors: one .safetensors file.")
@click.option("--to", "to_format", type=click.Choice(["lamina", "torch", "keras", "onnx", "hf", "safetensors"]),
              help="Destination format (default: from DST's extension; a directory is lamina); hf: a "
                   "Hugging Face directory (sharded by --max-shard-size); safetensors: one file.")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@click.option("--trust-pickle", is_flag=True,
              help="Allow a torch pickle to run code while loading. Only for files you trust.")
@click.option("--param-names", type=click.Path(exists=True, dir_okay=False),
              help="JSON list of optimizer parameter names in id order (when the checkpoint lacks them).")
@click.option("--optimizer-index", type=int, help="Which optimizer of a checkpoint with several.")
@click.option("--checkpoint", is_flag=True,
              help="torch output: a training checkpoint {model, optimizer, epoch, step, ...}.")
@click.option("--onnx-template", type=click.Path(exists=True, dir_okay=False),
              help="ONNX output: refresh the weights of this existing model (matched by name).")
@click.option("--external-data/--no-external-data", default=None,
              help="ONNX output: weights in DST.data (default: only above the 2 GB protobuf limit).")
@click.option("--max-shard-size", help="hf output: largest shard, e.g. 5GB, 500MB (default 5GB).")
@click.option("--tied", "tied", multiple=True, metavar="ALIAS=TARGET",
              help="hf input: record ALIAS as tied to the stored TARGET (repeatable), instead of the ties "
                   "config.json implies; --tied none records no ties.")
@one_line_errors
def convert(src: str, dst: str, from_format: str | None, to_format: str | None, overwrite: bool,
            trust_pickle: bool, param_names: str | None, optimizer_index: int | None, checkpoint: bool,
            onnx_template: str | None, external_data: bool | None, max_shard_size: str | None,
            tied: tuple[str, ...]) -> None:
    """Convert SRC to DST between lamina, torch (.pt .pth .bin .ckpt), Keras (.keras), ONNX (.onnx) and
    Hugging Face safetensors (a directory with --to hf, or one .safetensors file); SRC may also be
    hf://ORG/NAME[@REV] or a TensorFlow checkpoint or SavedModel (--from tf)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    import lamina

    if trust_pickle:
        click.secho("WARNING: --trust-pickle lets the checkpoint run arbitrary code on this machine. "
                    "Use it only for files from an author you trust.", fg="red", bold=True, err=True)
    columns = (TextColumn("[bold]writing"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=True, disable=not sys.stderr.isatty(), console=None) as bar:
        task = bar.add_task("convert", total=None)
        out = lamina.convert(
            src, dst, from_format=from_format, to_format=to_format, overwrite=overwrite or None,
            trust_pickle=trust_pickle or None, param_names=param_names, optimizer_index=optimizer_index,
            checkpoint=checkpoint or None, onnx_template=onnx_template, external_data=external_data,
            max_shard_size=max_shard_size, tied=_tied(tied), progress=lambda done, total: bar.update(task, completed=done, total=total),
            report=lambda message: click.echo(message, err=True),
        )
    click.echo(f"wrote {out}")


def _tied(values: tuple[str, ...]) -> dict[str, str] | bool | None:
    """``--tied`` values: none -> False; ALIAS=TARGET pairs -> a mapping; nothing -> None."""
    if not values:
        return None
    if values == ("none",):
        return False
    pairs = [v.split("=", 1) for v in values]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise click.BadParameter("expected ALIAS=TARGET (or none)", param_hint="--tied")
    return {alias: target for alias, target in pairs}


register(cli)
cli.add_command(checkpoints)
cli.add_command(inspect)
cli.add_command(verify)


def main() -> None:
    """Console-script entry point."""
    cli()
