"""``lamina.convert``: any supported format to any other, through the one snapshot writer."""

from __future__ import annotations

import importlib
import inspect
import os
import tempfile
from pathlib import Path
from typing import Any

from lamina._errors import ExistsError, FormatError
from lamina.storage.local import missing_folders, open_regular, remove_folders

__all__ = ["convert"]

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
    target = destination_format(dst, to_format)
    options = {**_TARGET_OPTIONS.get(target, {}), **options}
    if target in _READ_ONLY:
        raise FormatError(f"lamina reads {target} checkpoints but does not write them; convert to a lamina "
                          "directory, .keras or .onnx instead")
    if source == target == "lamina":
        raise FormatError("source and destination are both lamina snapshots; use `lamina push`/copy instead")
    if source == "lamina":
        return Path(_call(_converter(target).from_lamina, src, dst, **options))
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
            return Path(_call(_converter(target).from_lamina, snapshot, dst, **from_opts))
    except BaseException:
        remove_folders(missing)  # leave no folders behind a failed conversion
        raise
