"""Rich tables for ``lamina inspect`` and ``lamina diff``; plain tab-separated lines when piped."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["render_summary", "render_tensors", "render_diff", "format_bytes"]


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _pairs(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        if value not in (None, {}, [], ()):
            table.add_row(key, str(value))
    return table


def render_summary(s: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(_pairs("Snapshot", {
        "location": s["location"], "format": s["format_version"],
        "producer": " ".join(s["producer"].values()),
        "framework": " ".join(s["framework"].values()) if s["framework"] else None,
        "tensors": s["tensors"], "parameters": f"{s['parameters']:,}", "size": format_bytes(s["total_bytes"]),
    }))
    console.print(_pairs("Info", s["info"]))
    if s["training"]:
        console.print(_pairs("Training", s["training"]))
    layers = Table(title="Layers", title_justify="left")
    for col, justify in (("layer", "left"), ("tensors", "right"), ("parameters", "right"),
                         ("bytes", "right"), ("dtypes", "left")):
        layers.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in s["layers"]:
        layers.add_row(row["name"], str(row["tensors"]), f"{row['parameters']:,}", format_bytes(row["bytes"]),
                       ",".join(row["dtypes"]) or "(tied)")
    console.print(layers)
    if s["aliases"]:
        console.print(_pairs("Tied tensors", {k: f"-> {v}" for k, v in s["aliases"].items()}))
    if s["optimizer"]:
        o = s["optimizer"]
        console.print(_pairs("Optimizer", {
            "class": o["class"], "slots": ", ".join(o["slots"]),
            "params with state": o["params_with_state"], "state size": format_bytes(o["bytes"]),
            **{f"group {i}": f"{g['params']} params, {g['hyperparameters']}" for i, g in enumerate(o["param_groups"])},
        }))
    files = Table(title="Files", title_justify="left")
    for col in ("path", "role", "size", "sha256"):
        files.add_column(col, justify="right" if col == "size" else "left")
    for f in s["files"]:
        files.add_row(f["path"], f["role"], format_bytes(f["size"]), f["sha256"][:16] + "…")
    console.print(files)


def render_tensors(rows: list[dict[str, Any]], source: str, console: Console | None = None) -> None:
    """``inspect --tensors``: a table with a total on a terminal; piped, one tab-separated line per
    tensor under a header line (exact byte counts, ``-`` for no tie), for ``cut``/``awk``/``sort``."""
    console = console or Console()
    columns = ("name", "layer", "dtype", "shape", "bytes", "tied_to")
    if not console.is_terminal:
        lines = ["\t".join(columns)]
        lines += ["\t".join([r["name"], r["layer"], r["dtype"], "x".join(map(str, r["shape"])) or "scalar",
                             str(r["bytes"]), r["tied_to"] or "-"]) for r in rows]
        console.file.write("\n".join(lines) + "\n")
        return
    tied = any(r["tied_to"] for r in rows)
    columns = columns if tied else columns[:5]
    cells = [(r["name"], r["layer"], r["dtype"], "×".join(map(str, r["shape"])) or "scalar", format_bytes(r["bytes"]),
              f"-> {r['tied_to']}" if r["tied_to"] else "")[: len(columns)] for r in rows]
    widths = [max([len(col), *(len(c[i]) for c in cells)]) for i, col in enumerate(columns)] + [0]
    # Names in full when they fit beside the fixed columns; a layer (mostly a prefix of its name)
    # is the one shortened, with an ellipsis; a tie folds onto more lines.
    room = console.width - (3 * len(columns) + 1) - sum(widths[2:5])
    widths[0] = min(widths[0], max(16, room - 8 - min(widths[5], 24)))
    widths[5] = min(widths[5], max(7, room - widths[0] - min(widths[1], 8)))
    widths[1] = min(widths[1], max(5, room - widths[0] - widths[5]))
    table = Table(title=f"Tensors of {source}", title_justify="left")
    for col, width in zip(columns, widths):
        table.add_column(col.replace("_", " "), justify="right" if col == "bytes" else "left", width=width,
                         overflow="fold" if col in ("name", "tied_to") else "ellipsis",
                         no_wrap=col in ("layer", "dtype", "shape", "bytes"))
    for c in cells:
        table.add_row(*c)
    console.print(table)
    stored = [r for r in rows if not r["tied_to"]]
    params = sum(math.prod(r["shape"]) for r in stored)
    console.print(f"{len(rows)} tensor{'' if len(rows) == 1 else 's'} ({len(rows) - len(stored)} tied), {params:,} parameters, "
                  f"{format_bytes(sum(r['bytes'] for r in stored))} stored", highlight=False)


def render_diff(diff: Any) -> None:
    """Per-layer table of a :class:`lamina.SnapshotDiff`, then files and totals."""
    console = Console()
    table = Table(title=f"{diff.a} -> {diff.b}", title_justify="left")
    for column in ("layer", "status", "before", "after"):
        table.add_column(column, justify="right" if column in ("before", "after") else "left")
    style = {"added": "green", "removed": "red", "changed": "yellow", "unchanged": "dim"}
    for d in diff.layers:
        table.add_row(d.layer, f"[{style[d.status]}]{d.status}[/]", format_bytes(d.old_bytes), format_bytes(d.new_bytes))
    console.print(table)
    for path, status in diff.files:
        console.print(f"file {path}: {status}")
    counts = {s: len(getattr(diff, s)) for s in ("added", "removed", "changed", "unchanged")}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()) + f"; {format_bytes(diff.changed_bytes)} new or "
                  f"changed" + ("; info changed" if diff.info_changed else "")
                  + ("; training state changed" if diff.training_changed else ""))
