"""Rich tables for ``lamina inspect`` and ``lamina diff``; plain tab-separated lines when piped."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["render_summary", "render_tensors", "render_diff", "diff_summary", "format_bytes", "format_value",
           "hyperparameters"]


def format_bytes(n: int) -> str:
    """Binary units everywhere in the CLI: B, KiB, MiB, GiB, TiB (1 KiB = 1024 B)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# torch.optim defaults (and flags that only say "off"): inspect shows a group's other values.
_OFF = (None, False)
_DEFAULTS: dict[str, dict[str, Any]] = {
    "Adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0},
    "AdamW": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "decoupled_weight_decay": True},
    "SGD": {"lr": 1e-3, "momentum": 0, "dampening": 0, "weight_decay": 0},
    "RMSprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0, "momentum": 0},
    "Adagrad": {"lr": 1e-2, "lr_decay": 0, "weight_decay": 0, "initial_accumulator_value": 0, "eps": 1e-10},
}


def format_value(value: Any) -> str:
    """A value for a table cell: floats to 6 significant digits, sequences and mappings spelled
    out without Python brackets or quotes."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    return str(value)


def hyperparameters(class_name: str, values: dict[str, Any], show_all: bool = False) -> dict[str, Any]:
    """The hyperparameters worth showing: all with ``show_all``, else those that differ from the
    class's defaults (torch.optim classes) and are not merely off (None / False)."""
    if show_all:
        return dict(values)
    defaults = _DEFAULTS.get(class_name.rsplit(".", 1)[-1], {})

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    return {k: v for k, v in values.items() if not (k in defaults and same(v, defaults[k]))
            and not (k not in defaults and v in _OFF)}


def _pairs(title: str, rows: dict[str, Any]) -> Table | None:
    """A two-column table of the non-empty rows; None (nothing printed) when all are empty."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        if value not in (None, {}, [], (), ""):
            table.add_row(key, format_value(value))
    return table if table.row_count else None


def _print_tables(console: Console, tables: list[Table | None]) -> None:
    """Rich tables on a terminal; piped, each as plain lines (``title`` then ``key: value`` for a
    two-column table, tab-separated cells under a header otherwise): no borders, no wrapping."""
    for table in tables:
        if table is None:
            continue
        if console.is_terminal:
            console.print(table)
            continue
        cells = [[_plain(c) for c in column.cells] for column in table.columns]
        rows = list(zip(*cells))
        lines = [f"{table.title}:"]
        if table.show_header:
            lines.append("\t".join(str(c.header) for c in table.columns))
            lines += ["\t".join(r) for r in rows]
        else:
            lines += [f"  {r[0]}: {r[1]}" for r in rows]
        console.file.write("\n".join(lines) + "\n")


def _plain(cell: Any) -> str:
    from rich.text import Text

    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain


def render_summary(s: dict[str, Any], console: Console | None = None, show_all: bool = False) -> None:
    console = console or Console()
    tables = [_pairs("Snapshot", {
        "location": s["location"], "format": s["format_version"],
        "producer": " ".join(s["producer"].values()),
        "framework": " ".join(s["framework"].values()) if s["framework"] else None,
        "tensors": s["tensors"], "parameters": f"{s['parameters']:,}", "size": format_bytes(s["total_bytes"]),
    }), _pairs("Info", s["info"])]
    if s["training"]:
        training = dict(s["training"])
        metrics = training.pop("metrics", None) or {}
        tables.append(_pairs("Training", {**training, **{f"metric {k}": v for k, v in metrics.items()}}))
    layers = Table(title="Layers", title_justify="left")
    for col, justify in (("layer", "left"), ("tensors", "right"), ("parameters", "right"),
                         ("bytes", "right"), ("dtypes", "left")):
        layers.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in s["layers"]:
        layers.add_row(row["name"], str(row["tensors"]), f"{row['parameters']:,}", format_bytes(row["bytes"]),
                       ",".join(row["dtypes"]) or "(tied)")
    tables.append(layers if layers.row_count else None)
    if s["aliases"]:
        tables.append(_pairs("Tied tensors", {k: f"-> {v}" for k, v in s["aliases"].items()}))
    if s["optimizer"]:
        o = s["optimizer"]
        groups = {}
        for i, g in enumerate(o["param_groups"]):
            shown = hyperparameters(o["class"], g["hyperparameters"], show_all)
            groups[f"group {i}"] = f"{g['params']} params" + (f", {format_value(shown)}" if shown else "")
        tables.append(_pairs("Optimizer", {
            "class": o["class"], "slots": ", ".join(o["slots"]),
            "params with state": o["params_with_state"], "state size": format_bytes(o["bytes"]), **groups,
        }))
    files = Table(title="Files", title_justify="left")
    for col in ("path", "role", "size", "digest"):
        files.add_column(col, justify="right" if col == "size" else "left")
    for f in s["files"]:
        algorithm, digest = ("lt1", f["lt1"]) if f.get("lt1") else ("sha256", f.get("sha256") or "")
        files.add_row(f["path"], f["role"], format_bytes(f["size"]), f"{algorithm}:{digest[:16]}…")
    tables.append(files if files.row_count else None)
    _print_tables(console, tables)


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


def render_diff(diff: Any, console: Console | None = None) -> None:
    """Per-layer table of a :class:`lamina.SnapshotDiff`, then non-layer files, then a summary that
    counts exactly the rows above (piped: plain tab-separated lines)."""
    console = console or Console()
    table = Table(title=f"{diff.a} -> {diff.b}", title_justify="left")
    for column in ("layer", "status", "before", "after"):
        table.add_column(column, justify="right" if column in ("before", "after") else "left")
    style = {"added": "green", "removed": "red", "changed": "yellow", "unchanged": "dim"}
    for d in diff.layers:
        table.add_row(d.layer, f"[{style[d.status]}]{d.status}[/]", format_bytes(d.old_bytes), format_bytes(d.new_bytes))
    files = Table(title="Other files", title_justify="left")
    for column in ("path", "status"):
        files.add_column(column)
    for path, status in diff.files:
        files.add_row(path, f"[{style[status]}]{status}[/]")
    _print_tables(console, [table if table.row_count else None, files if files.row_count else None])
    console.print(diff_summary(diff), highlight=False, soft_wrap=True)


def diff_summary(diff: Any) -> str:
    """One line: the layer rows by status, the file rows by status, bytes, info and training."""
    if diff.identical:
        return f"identical: {len(diff.layers)} layer(s) unchanged"
    layers = ", ".join(f"{len(getattr(diff, s))} {s}" for s in ("added", "removed", "changed", "unchanged"))
    parts = [f"layers: {layers}"]
    if diff.files:
        counts: dict[str, int] = {}
        for _, status in diff.files:
            counts[status] = counts.get(status, 0) + 1
        parts.append("other files: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    parts.append(f"{format_bytes(diff.changed_bytes)} of weights added or changed")
    if diff.info_changed:
        parts.append("info changed")
    if diff.training_changed:
        parts.append("training state changed")
    return "; ".join(parts)
