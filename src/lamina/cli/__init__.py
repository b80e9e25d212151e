"""lamina.cli: the ``lamina`` command line — convert here; inspect and verify in
``_inspect_commands``, repository commands in ``_repo_commands``, checkpoints in
``_checkpoint_commands``; one-line errors and exit codes in ``_errors_cli``.

May import: the public façade (``lamina``) and anything below it; nothing imports the CLI."""

from __future__ import annotations

import click

from .._version import __version__
from ._cache_commands import cache
from ._checkpoint_commands import checkpoints
from ._errors_cli import (
    emit_json,
    epilog,
    json_option,
    one_line_errors,
    progress_option,
    quiet_option,
    set_interrupt_hint,
)
from ._inspect_commands import inspect, verify
from ._repo_commands import register

__all__ = ["main", "cli"]

_GROUP_EPILOG = """\b
Exit codes (every command):
  0    success
  1    the command found problems (verify, fsck, diff --exit-code)
  2    usage or input error (one 'error: <Type>: ...' line on stderr; with --json also {"error": ...} on stdout)
  130  interrupted (Ctrl-C)

\b
Sizes are printed in binary units (1 KiB = 1024 B, MiB, GiB). Output is plain text when stdout is
not a terminal. Shell completion: eval "$(_LAMINA_COMPLETE=bash_source lamina)" (zsh_source, fish_source).
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_GROUP_EPILOG)
@click.version_option(__version__, "--version", "-V", prog_name="lamina")
def cli() -> None:
    """lamina: per-layer, versioned model snapshots."""


@cli.command(epilog=epilog(
    "lamina convert checkpoint.pt out/model",
    "lamina convert out/model model.onnx --onnx-template base.onnx",
    "lamina convert hf://org/name@v1.0 out/model",
    "lamina convert out/model hf-out --to hf --max-shard-size 2GB",
    "lamina convert model.pt out/model.v2 --to lamina",
))
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
@json_option
@quiet_option
@progress_option
@one_line_errors
def convert(src: str, dst: str, from_format: str | None, to_format: str | None, overwrite: bool,
            trust_pickle: bool, param_names: str | None, optimizer_index: int | None, checkpoint: bool,
            onnx_template: str | None, external_data: bool | None, max_shard_size: str | None,
            tied: tuple[str, ...], as_json: bool, quiet: bool, no_progress: bool) -> None:
    """Convert SRC to DST between lamina, torch (.pt .pth .bin .ckpt), Keras (.keras), ONNX (.onnx) and
    Hugging Face safetensors (a directory with --to hf, or one .safetensors file); SRC may also be
    hf://ORG/NAME[@REV] or a TensorFlow checkpoint or SavedModel (--from tf).

    A DST with another extension (out.xyz) needs --to. With --onnx-template, a template none of whose
    initializers the snapshot holds is refused; a partial match is written with a warning on stderr.
    """
    import lamina

    from ._progress import progress_bar, showing_progress

    if trust_pickle:
        click.secho("WARNING: --trust-pickle lets the checkpoint run arbitrary code on this machine. "
                    "Use it only for files from an author you trust.", fg="red", bold=True, err=True)
    set_interrupt_hint(f"{dst} was not written (a conversion appears only once complete)")
    messages: list[str] = []

    def report(message: str) -> None:
        messages.append(message)
        if not quiet or message.startswith("warning:"):
            click.echo(message, err=True)

    with progress_bar("converting", showing_progress(no_progress, quiet)) as progress:
        out = lamina.convert(
            src, dst, from_format=from_format, to_format=to_format, overwrite=overwrite or None,
            trust_pickle=trust_pickle or None, param_names=param_names, optimizer_index=optimizer_index,
            checkpoint=checkpoint or None, onnx_template=onnx_template, external_data=external_data,
            max_shard_size=max_shard_size, tied=_tied(tied), progress=progress, report=report,
        )
    if as_json:
        emit_json({"source": src, "destination": str(out), "messages": messages})
    elif not quiet:
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
cli.add_command(cache)
cli.add_command(checkpoints)
cli.add_command(inspect)
cli.add_command(verify)


def main() -> None:
    """Console-script entry point (also ``python -m lamina``): the program is ``lamina`` in usage
    lines and shell completion (``_LAMINA_COMPLETE``)."""
    cli(prog_name="lamina")
