"""``lamina checkpoints list``: the checkpoints of a training run."""

from __future__ import annotations

import click

from ._errors_cli import emit_json, epilog, json_option, one_line_errors
from ._render import format_bytes

__all__ = ["checkpoints"]


@click.group()
def checkpoints() -> None:
    """Checkpoints written by lamina.CheckpointManager."""


@checkpoints.command("list", epilog=epilog("lamina checkpoints list runs/exp1",
                                           "lamina checkpoints list runs/exp1 --json | jq '.checkpoints[-1]'"))
@click.argument("path")
@json_option
@one_line_errors
def list_command(path: str, as_json: bool) -> None:
    """Steps, metrics, sizes and which retention rule keeps each checkpoint in PATH."""
    import lamina
    from lamina.training.checkpoints import list_checkpoints, read_policy

    repo = lamina.Repo(path)
    repo._require()
    policy = read_policy(repo)
    rows = list_checkpoints(repo, policy)
    if as_json:
        emit_json({"policy": policy, "checkpoints": [
            {"step": c.step, "revision": c.revision, "saved": c.saved.isoformat(), "epoch": c.epoch, "metrics": dict(c.metrics), "size": c.size,
             "new_bytes": c.new_bytes, "kept_by": list(c.kept_by)} for c in rows]})
        return
    from rich.console import Console
    from rich.table import Table

    rules = ", ".join(f"{k}={v}" for k, v in policy.items() if v is not None) or "none recorded"
    table = Table(title=f"{path} (retention: {rules})", title_justify="left")
    metric_names = sorted({name for c in rows for name in c.metrics})
    for column in ("step", "epoch", *metric_names, "size", "new", "kept by", "revision"):
        table.add_column(column, justify="right" if column not in ("kept by", "revision") else "left")
    for c in rows:
        metrics = [f"{c.metrics[n]:.6g}" if n in c.metrics else "" for n in metric_names]
        table.add_row(str(c.step), "" if c.epoch is None else str(c.epoch), *metrics, format_bytes(c.size),
                      format_bytes(c.new_bytes), ", ".join(c.kept_by) or "[red]dropped at next save[/]",
                      c.revision[:12])
    Console().print(table)
    click.echo(f"{len(rows)} checkpoint(s)")
