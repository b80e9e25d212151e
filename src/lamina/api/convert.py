"""``lamina.convert``: any supported format to any other, through the one snapshot writer."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lamina._errors import ExistsError, FormatError
from lamina.storage.local import missing_folders, open_regular, remove_folders

__all__ = ["convert", "watch_reads"]

_MODULES = {"torch": "lamina.converters.torch_pickle", "keras": "lamina.converters.keras",
            "onnx": "lamina.converters.onnx", "tf": "lamina.converters.tf_checkpoint",
            "hf": "lamina.converters.hf", "safetensors": "lamina.converters.hf"}
_INSTALL = {"torch": "pip install 'lamina[torch]'", "keras": "pip install 'lamina[keras]'",
            "onnx": "pip install 'lamina[onnx]'", "tf": "pip install tensorflow-cpu (or tensorflow)",
            "hf": "pip install 'lamina[hub]'", "safetensors": "pip install 'lamina[hub]'"}
#: options a destination format implies for its converter's ``from_lamina``
_TARGET_OPTIONS: dict[str, dict[str, Any]] = {"safetensors": {"single_file": True}}


def _converter(fmt: str) -> Any:
    try:
        return importlib.import_module(_MODULES[fmt])
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("lamina.converters"):
            raise FormatError(f"no {fmt} converter in this lamina version") from None
        raise FormatError(f"converting {fmt} needs {exc.name}: {_INSTALL[fmt]}") from None


_READ_ONLY = {"tf"}  # formats lamina converts from, never to
_HINTS = {"progress", "report"}  # passed when a converter can use it, dropped silently otherwise


def _call(func: Any, *args: Any, **options: Any) -> Any:
    accepted = set(inspect.signature(func).parameters)
    unknown = sorted(k for k, v in options.items() if v is not None and k not in accepted and k not in _HINTS)
    if unknown:
        raise FormatError(f"{func.__module__}.{func.__name__} does not take {unknown}; it takes "
                          f"{sorted(accepted - {'src', 'dst'})}")
    return func(*args, **{k: v for k, v in options.items() if k in accepted and v is not None})


#: destination extensions that name a format (others need ``to_format``): converters._detect
_KNOWN_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".keras", ".h5", ".onnx", ".safetensors"}
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,9}")


def _check_destination_suffix(dst: str | os.PathLike[str]) -> None:
    """A destination with a file extension lamina does not know (``out.xyz``) is refused rather
    than silently becoming a lamina directory of that name; ``to_format`` says what to write.
    Suffixes that are not extensions (``Llama-3.2-1B``, ``run.1``) and existing snapshots pass."""
    path = Path(dst)
    suffix = path.suffix
    if not suffix or suffix.lower() in _KNOWN_SUFFIXES or not _EXTENSION.fullmatch(suffix):
        return
    if path.is_dir() and (path / "manifest.msgpack").exists():
        return
    raise FormatError(f"{dst}: unknown destination extension {suffix!r}; pass to_format='lamina' (CLI: --to lamina) "
                      f"to write a lamina snapshot directory of that name, or use .pt .pth .bin .ckpt (torch), "
                      f".keras, .onnx or .safetensors")


def _from_lamina(target: str, snapshot: Any, dst: Any, options: dict[str, Any]) -> Any:
    """Export ``snapshot`` to ``target``; an ONNX template is first checked against it. A
    ``progress`` callback that the converter does not take follows the bytes it reads instead."""
    if target == "onnx" and options.get("onnx_template") is not None:
        _check_onnx_template(snapshot, options["onnx_template"], options.get("report"))
    from_lamina = _converter(target).from_lamina
    progress = options.get("progress")
    if progress is None or "progress" in inspect.signature(from_lamina).parameters:
        return _call(from_lamina, snapshot, dst, **options)
    from lamina.repo.repository import open_location

    art = open_location(snapshot)
    total = sum(f.size for f in art.manifest.files if f.role in ("weights", "optimizer"))
    with watch_reads(art._store, total, progress):
        out = _call(from_lamina, art, dst, **options)
    progress(total, total)
    return out


@contextmanager
def watch_reads(store: Any, total: int | None, progress: Any) -> Iterator[None]:
    """Report the bytes read through ``store`` (``progress(done, total)``, done capped at total)
    while the block runs: for operations whose own code takes no progress callback."""
    done = 0
    lock = threading.Lock()

    def add(n: int) -> None:
        nonlocal done
        with lock:
            done += n
            current = done if total is None else min(done, total)
        progress(current, total)

    def read(path: str, *args: Any, **kwargs: Any) -> bytes:
        data = original["read"](path, *args, **kwargs)
        add(len(data))
        return data

    def read_into(path: str, ranges: Any) -> Any:
        out = original["read_into"](path, ranges)
        add(sum(len(view) for _, view in ranges))
        return out

    def iter_chunks(path: str, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in original["iter_chunks"](path, *args, **kwargs):
            add(len(chunk))
            yield chunk

    original = {name: getattr(store, name) for name in ("read", "read_into", "iter_chunks")}
    replaced = {"read": read, "read_into": read_into, "iter_chunks": iter_chunks}
    progress(0, total)
    for name, func in replaced.items():
        setattr(store, name, func)  # the instance's attribute shadows its class's method
    try:
        yield
    finally:
        for name in replaced:
            store.__dict__.pop(name, None)


def _check_onnx_template(snapshot: Any, template: str | os.PathLike[str], report: Any) -> None:
    """Refuse a template none of whose initializers the snapshot holds (the export would replace
    nothing and write the template back); warn when only some of them match."""
    import warnings

    from lamina.converters._onnx_model import initializers, load_model
    from lamina.repo.repository import open_location

    art = open_location(snapshot)
    names = [t.name for t, _ in initializers(load_model(Path(template)))]
    keys = set(art.keys())
    matched = [n for n in names if n in keys]
    if names and not matched:
        raise FormatError(f"{template}: none of its {len(names)} initializers is named like a tensor of the snapshot "
                          f"(graph: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}; snapshot: "
                          f"{', '.join(sorted(keys)[:3])}{', ...' if len(keys) > 3 else ''}); nothing would be "
                          f"replaced, so nothing was written")
    if len(matched) < len(names):
        kept = [n for n in names if n not in keys]
        message = (f"warning: only {len(matched)} of {len(names)} initializers of {template} are in the snapshot; "
                   f"{len(kept)} keep the template's values ({', '.join(kept[:5])}{', ...' if len(kept) > 5 else ''})")
        if report is not None:
            report(message)
        else:
            warnings.warn(message.removeprefix("warning: "), UserWarning, stacklevel=4)


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    from_format: str | None = None,
    to_format: str | None = None,
    **options: Any,
) -> Path:
    """Convert between lamina snapshots and torch, Keras, ONNX and Hugging Face safetensors files;
    read TensorFlow checkpoints.

    The source format is detected from content, the destination format from the extension
    (``.pt .pth .bin .ckpt`` torch, ``.keras`` Keras, ``.onnx`` ONNX, ``.safetensors`` one
    safetensors file, otherwise a lamina directory); ``from_format`` / ``to_format`` override
    (``to_format="hf"`` writes a Hugging Face directory, sharded by ``max_shard_size``). A source
    may be a Hugging Face directory or ``hf://org/name[@revision]`` (``"hf"``, downloaded through
    huggingface_hub's cache). A TensorFlow checkpoint (``"tf"``: a checkpoint directory, a prefix
    such as ``ckpt-3``, its ``.index`` file, or a SavedModel directory) is a source only.
    Foreign-to-foreign conversions go through a temporary snapshot. ``options`` go to the
    converters (e.g. ``trust_pickle``, ``param_names``, ``checkpoint``, ``overwrite``,
    ``progress``, ``include_optimizer``, ``max_shard_size``, ``tied``); one that no converter
    involved takes is an error.

    Example:
        >>> import lamina, torch, tempfile, os
        >>> d = tempfile.mkdtemp(); torch.save({"fc.weight": torch.eye(2)}, os.path.join(d, "m.pt"))
        >>> out = lamina.convert(os.path.join(d, "m.pt"), os.path.join(d, "snap"))
        >>> lamina.open(out).keys()
        ['fc.weight']
    """
    from lamina.converters._detect import FORMATS, destination_format, detect_source

    if from_format is not None and from_format not in FORMATS:
        raise FormatError(f"unknown format {from_format!r}; choose one of {', '.join(FORMATS)}")
    hub = os.fspath(src).startswith("hf://")
    if from_format is not None and from_format != "tf" and not hub and not Path(src).is_dir():
        open_regular(src).close()  # converters open it themselves: refuse a FIFO or device before they block
    source = from_format or detect_source(src)
    if to_format is None:
        _check_destination_suffix(dst)
    target = destination_format(dst, to_format)
    options = {**_TARGET_OPTIONS.get(target, {}), **options}
    if target in _READ_ONLY:
        raise FormatError(f"lamina reads {target} checkpoints but does not write them; convert to a lamina "
                          "directory, .keras or .onnx instead")
    if source == target == "lamina":
        raise FormatError("source and destination are both lamina snapshots; use `lamina push`/copy instead")
    if source == "lamina":
        return Path(_from_lamina(target, src, dst, options))
    if target == "lamina":
        _call(_converter(source).to_lamina, src, dst, **options)
        return Path(dst)
    to_opts = {k: v for k, v in options.items() if k in inspect.signature(_converter(source).to_lamina).parameters}
    from_opts = {k: v for k, v in options.items() if k not in to_opts or k == "overwrite"}
    parent = Path(dst).absolute().parent
    missing = missing_folders(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExistsError(f"cannot create the directory {parent}: {exc.strerror}") from None
    try:
        with tempfile.TemporaryDirectory(prefix=".lamina-convert-", dir=parent) as tmp:
            snapshot = Path(tmp) / "snapshot"
            _call(_converter(source).to_lamina, src, snapshot, **{**to_opts, "overwrite": None})
            return Path(_from_lamina(target, snapshot, dst, from_opts))
    except BaseException:
        remove_folders(missing)  # leave no folders behind a failed conversion
        raise
