"""Hugging Face safetensors layouts <-> lamina snapshots.

In: one ``.safetensors`` file, or a directory in any of transformers' layouts — ``model.safetensors``,
``model-0000i-of-0000N.safetensors`` + ``model.safetensors.index.json``, or a PEFT adapter
(``adapter_model.safetensors`` + ``adapter_config.json``) — locally or from the hub
(``hf://org/name[@revision]``, through huggingface_hub's cache). Tensor bytes are copied unchanged,
streamed from memory-mapped files one layer at a time (``_hf_stream``); each file's
``__metadata__`` and the index's metadata are kept in ``info.extra["hf"]``; tied weights that
transformers saved once come back as aliases (``_hf_ties``); every other file of the directory is
carried byte for byte, at its own path (``_hf_layout``).

Out: a directory that ``transformers``' ``from_pretrained`` and ``huggingface_hub.load_torch_model``
load — sharded by size with huggingface_hub's own splitting rule, ``model.safetensors`` when one
shard is enough, tied weights written once, the carried files put back — or one ``.safetensors``
file. Tensors are read from the snapshot one at a time and written shard by shard.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lamina._errors import ExistsError, FormatError
from lamina.format.dtypes import dtype_info
from lamina.format.manifest import ModelInfo, TensorEntry, coerce_info
from lamina.format.naming import default_layer
from lamina.format.shards import plan_shard
from lamina.frameworks import registry
from lamina.frameworks.base import Collected
from lamina.hub.remote import is_hub
from lamina.repo.repository import open_location
from lamina.repo.targets import write_snapshot
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.writer import atomic_file_write
from lamina.storage.local import (
    missing_folders,
    os_errors_as_storage_errors,
    remove_folders,
)

from ._hf_layout import (
    ADAPTER,
    ADAPTER_CONFIG,
    DEFAULT_EXCLUDE,
    INDEX,
    Layout,
    read_layout,
)
from ._hf_stream import Budget, MappedFiles, MappedSource

__all__ = ["to_lamina", "from_lamina", "describe", "DEFAULT_EXCLUDE", "LAMINA_RECORDS"]

#: extra files that lamina's converters write for themselves; not put back into a Hugging Face directory
LAMINA_RECORDS = ("keras/", "onnx/", "tf/", "training/")
_FRAMEWORKS = {"pt": "torch", "tf": "tensorflow", "flax": "jax", "np": "numpy"}


def describe(path: str | os.PathLike[str], *, tied: Mapping[str, str] | bool | None = None) -> list[dict[str, Any]]:
    """The tensors of a ``.safetensors`` file or Hugging Face directory, from headers only (no
    tensor data is read): one dict per tensor with ``name``, ``layer`` (lamina's default layer),
    ``dtype``, ``shape``, ``nbytes``, ``tied_to`` (the stored tensor an alias shares, else None) and
    ``file`` (relative to the directory; for an alias, its stored tensor's file).

    Example:
        >>> import numpy as np, tempfile, os
        >>> from safetensors.numpy import save_file
        >>> p = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> save_file({"fc.weight": np.zeros((2, 3), "float32")}, p)
        >>> describe(p)
        [{'name': 'fc.weight', 'layer': 'fc', 'dtype': 'F32', 'shape': [2, 3], 'nbytes': 24, 'tied_to': None, 'file': 'm.safetensors'}]
    """
    layout = read_layout(path, tied=tied, extras=False)
    rows = [{"name": t.name, "layer": default_layer(t.name), "dtype": t.entry.dtype, "shape": list(t.entry.shape),
             "nbytes": t.entry.nbytes, "tied_to": None, "file": t.file} for t in layout.tensors]
    by_name = {row["name"]: row for row in rows}
    for alias, target in layout.ties.items():
        rows.append({**by_name[target], "name": alias, "layer": default_layer(alias), "tied_to": target})
    return rows


# ------------------------------------------------------------------------------------------- in
def _record(layout: Layout, origin: Mapping[str, str] | None) -> dict[str, Any]:
    """What ``info.extra["hf"]`` keeps: enough to write the same layout back."""
    record: dict[str, Any] = {"layout": layout.kind, "weights": list(layout.weights),
                              "metadata": {f: dict(m) for f, m in layout.metadata.items()}}
    if layout.index_metadata:
        record["index_metadata"] = layout.index_metadata
    if layout.ties:
        record["tied"] = dict(layout.ties)
    if layout.extras:
        record["files"] = sorted(layout.extras)
        renamed = {layout.snapshot_path(p): p for p in layout.extras if layout.snapshot_path(p) != p}
        if renamed:
            record["renamed"] = renamed
    if layout.skipped:
        record["skipped"] = list(layout.skipped)
    if origin:
        record["source"] = dict(origin)
    return record


def _info(info: ModelInfo | Mapping[str, Any] | None, name: str, record: dict[str, Any]) -> ModelInfo:
    base = coerce_info(info if info is not None else {"name": name})
    return dataclasses.replace(base, extra={"hf": record, **base.extra})


def to_lamina(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    tied: Mapping[str, str] | bool | None = None,
    exclude: Sequence[str] | None = None,
    info: ModelInfo | Mapping[str, Any] | None = None,
    overwrite: bool = False,
    durable: bool = True,
    progress: Callable[[int, int], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> Artifact:
    """Convert a ``.safetensors`` file or a Hugging Face directory (local, or ``hf://org/name[@rev]``)
    to a snapshot.

    Args:
        src: a ``.safetensors`` file, a directory with ``model.safetensors``, a sharded
            ``model.safetensors.index.json``, or ``adapter_model.safetensors``; or a hub repository.
        tied: ``None`` (default): aliases for the tied weights ``config.json`` implies (see
            ``_hf_ties``); ``False``: none; ``{alias: stored tensor}``: exactly these.
        exclude: ``fnmatch`` patterns (on relative paths) of files not to carry; default
            :data:`DEFAULT_EXCLUDE` (weights in other formats: pickles, ``.h5``, ``.msgpack``, ...).
            Pass ``()`` to carry everything.
        report: called with one line naming skipped files and restored ties.

    Raises:
        FormatError: a malformed header or index, an index that disagrees with its shards, a
            tensor in two shards, a file that is not regular. UnsafePathError: a path or symbolic
            link leading outside the directory. NotFoundError: a shard the index names is missing
            (or, offline, a hub repository not in the cache).

    Example:
        >>> import numpy as np, tempfile, os, lamina
        >>> from safetensors.numpy import save_file
        >>> d = tempfile.mkdtemp(); os.mkdir(os.path.join(d, "hf"))
        >>> save_file({"fc.weight": np.eye(2, dtype="float32")}, os.path.join(d, "hf", "model.safetensors"),
        ...           metadata={"format": "pt"})
        >>> art = to_lamina(os.path.join(d, "hf"), os.path.join(d, "snap"))
        >>> art.layers, art.info.extra["hf"]["metadata"]
        (['fc'], {'model.safetensors': {'format': 'pt'}})
    """
    patterns = tuple(DEFAULT_EXCLUDE if exclude is None else exclude)
    origin: dict[str, str] | None = None
    if is_hub(src):
        from ._hf_hub import download

        local, origin = download(os.fspath(src), patterns)
        name = origin["repo"]
    else:
        local = Path(src)
        name = local.stem if local.is_file() else local.absolute().name
    layout = read_layout(local, tied=tied, exclude=patterns)
    layer_bytes: dict[str, int] = {}
    for t in layout.tensors:
        layer_bytes[default_layer(t.name)] = layer_bytes.get(default_layer(t.name), 0) + t.entry.nbytes
    budget = Budget(layer_bytes)
    mapped = MappedFiles(layout.paths, layout.sizes)
    try:
        numpy = registry.get("numpy")
        tensors = [MappedSource(t.name, dtype_info(t.entry.dtype), t.entry.shape, None, numpy, mapping=mapped.maps[t.file],
                                begin=t.entry.begin, end=t.entry.end, layer=default_layer(t.name), budget=budget)
                   for t in layout.tensors]
        fmt = next((m.get("format") for m in layout.metadata.values() if m.get("format")), None)
        collected = Collected(tensors, dict(layout.ties), {"name": _FRAMEWORKS.get(fmt, fmt or "safetensors")})
        files = {layout.snapshot_path(p): path for p, path in layout.extras.items()}
        art = write_snapshot(dst, collected, info=_info(info, name, _record(layout, origin)), files=files or None,
                             overwrite=overwrite, durable=durable, progress=progress, after_shard=budget.after_shard)
    finally:
        budget.close()
        mapped.close()
    if report is not None and (layout.skipped or layout.ties):
        parts = [f"restored tied weights {layout.ties}"] if layout.ties else []
        if layout.skipped:
            parts.append(f"did not carry {len(layout.skipped)} file(s) of weights in other formats "
                         f"({', '.join(layout.skipped[:5])}{', ...' if len(layout.skipped) > 5 else ''})")
        report(f"{src}: {'; '.join(parts)}")
    return art


# ------------------------------------------------------------------------------------------ out
def _shard_size(value: int | str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise FormatError(f"max_shard_size must be bytes (int) or a size like '5GB', got {value!r}")
    if isinstance(value, str):
        from huggingface_hub.serialization._base import parse_size_to_int

        try:
            value = parse_size_to_int(value)
        except ValueError as exc:
            raise FormatError(f"max_shard_size {value!r}: {exc}") from None
    if value <= 0:
        raise FormatError(f"max_shard_size must be positive, got {value}")
    return value


def plan_shards(tensors: Sequence[TensorEntry], max_shard_size: int | str, prefix: str = "model") -> dict[str, list[str]]:
    """``{file name: tensor names}``, decided by huggingface_hub's own
    ``split_state_dict_into_shards_factory`` from the tensors' sizes (in this order, no data read)."""
    try:
        from huggingface_hub import split_state_dict_into_shards_factory
    except ImportError:
        raise FormatError("writing a Hugging Face directory needs huggingface_hub (its shard splitting "
                          "rule): pip install 'lamina[hub]'") from None
    split = split_state_dict_into_shards_factory({t.name: t for t in tensors}, get_storage_size=lambda t: t.nbytes,
                                                 filename_pattern=prefix + "{suffix}.safetensors",
                                                 max_shard_size=_shard_size(max_shard_size))
    return {f: list(names) for f, names in split.filename_to_tensors.items()}


def _metadata(record: Mapping[str, Any]) -> dict[str, str]:
    """``__metadata__`` for written files: ``{"format": "pt"}`` plus what every source file agreed on,
    keys sorted (as safetensors writes them)."""
    kept = [m for m in (record.get("metadata") or {}).values() if isinstance(m, dict)]
    common = {k: v for k, v in (kept[0] if kept else {}).items()
              if isinstance(v, str) and all(m.get(k) == v for m in kept)}
    return dict(sorted({"format": "pt", **common}.items()))


def _write_safetensors(art: Artifact, path: Path, names: Sequence[str], metadata: Mapping[str, str]) -> int:
    """One safetensors file of the named stored tensors, read one at a time; returns its size."""
    entries = {t.name: t for t in art.manifest.tensors}
    header, planned = plan_shard([(n, entries[n].dtype, entries[n].shape) for n in names], metadata)
    numpy = registry.get("numpy")
    with open(path, "wb") as f:
        f.write(header)
        for e in planned:
            if e.nbytes:
                f.write(numpy.tensor_bytes(art.tensor(e.name, framework="np")))
        return f.tell()


def _extras(art: Artifact, record: Mapping[str, Any]) -> dict[str, str]:
    """``{path in the Hugging Face directory: path in the snapshot}`` of the files to put back."""
    if isinstance(record.get("files"), list):
        inverse = {v: k for k, v in (record.get("renamed") or {}).items()}
        wanted = {p: inverse.get(p, p) for p in record["files"] if isinstance(p, str)}
        return {p: s for p, s in wanted.items() if s in art.files}
    return {f.path: f.path for f in art.manifest.files
            if f.role == "extra" and not f.path.startswith(LAMINA_RECORDS)}


def _replaceable(dst: Path) -> bool:
    names = {p.name for p in dst.iterdir()}
    return not names or (not names & {"manifest.msgpack"} and bool(names & {"model.safetensors", INDEX, ADAPTER}))


def _atomic_directory(dst: Path, write: Callable[[Path], None], overwrite: bool) -> Path:
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise ExistsError(f"{dst} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
        if dst.is_symlink() or not dst.is_dir() or not _replaceable(dst):
            raise ExistsError(f"{dst} exists and is not a Hugging Face safetensors directory; refusing to replace it")
    created = missing_folders(dst.parent)
    tmp = dst.parent / f".{dst.name}.lamina-tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with os_errors_as_storage_errors(f"cannot write {dst}"):
            tmp.mkdir(parents=True)
            write(tmp)
            if dst.exists():
                trash = dst.parent / f".{dst.name}.lamina-old-{os.getpid()}-{secrets.token_hex(4)}"
                os.rename(dst, trash)
                os.rename(tmp, dst)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_folders(created)  # a failed export leaves no folders behind
        raise
    return dst


def from_lamina(
    src: str | os.PathLike[str] | Artifact,
    dst: str | os.PathLike[str],
    *,
    max_shard_size: int | str = "5GB",
    single_file: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Write a snapshot as a Hugging Face directory (or, with ``single_file``, one ``.safetensors``).

    The directory holds ``model.safetensors``, or ``model-0000i-of-0000N.safetensors`` shards of at
    most ``max_shard_size`` (huggingface_hub's rule: tensors in snapshot order, a new shard when the
    next would overflow, a larger tensor alone) and ``model.safetensors.index.json``; a snapshot
    converted from a PEFT adapter gives ``adapter_model.safetensors``. Aliases (tied weights) are
    not written, as transformers expects; each file's ``__metadata__`` is ``{"format": "pt"}`` plus
    the metadata kept from the source files. Extra files go back to their paths (for a snapshot
    converted from Hugging Face: the files it carried; otherwise every extra file but lamina's
    converter records under ``keras/ onnx/ tf/ training/``).

    Example:
        >>> import numpy as np, tempfile, os, lamina
        >>> from safetensors.numpy import load_file
        >>> d = tempfile.mkdtemp()
        >>> _ = lamina.save({"fc.weight": np.eye(2, dtype="float32")}, os.path.join(d, "snap"))
        >>> out = from_lamina(os.path.join(d, "snap"), os.path.join(d, "hf"))
        >>> sorted(os.listdir(out)), load_file(os.path.join(out, "model.safetensors"))["fc.weight"].tolist()
        (['model.safetensors'], [[1.0, 0.0], [0.0, 1.0]])
    """
    art = src if isinstance(src, Artifact) else open_location(src)
    record = art.info.extra.get("hf") if isinstance(art.info.extra.get("hf"), dict) else {}
    metadata = _metadata(record)
    stored = list(art.manifest.tensors)
    total = sum(t.nbytes for t in stored)
    if single_file:
        return atomic_file_write(dst, lambda tmp: _write_safetensors(art, tmp, [t.name for t in stored], metadata),
                                 overwrite=overwrite)
    extras = _extras(art, record)
    adapter = record.get("layout") == "adapter" or (not record and ADAPTER_CONFIG in extras)
    plan = ({ADAPTER: [t.name for t in stored]} if adapter
            else plan_shards(stored, max_shard_size))
    clash = sorted(set(extras) & (set(plan) | {INDEX}))
    if clash and report is not None:
        report(f"{art.location}: not writing extra file(s) {clash}: their names are the weight files'")
    extras = {p: s for p, s in extras.items() if p not in clash}

    def write(tmp: Path) -> None:
        done = 0
        for filename, names in plan.items():
            done += _write_safetensors(art, tmp / filename, names, metadata)
            if progress is not None:
                progress(min(done, total), total)
        if len(plan) > 1:
            index_meta = {k: v for k, v in (record.get("index_metadata") or {}).items()}
            index_meta["total_size"] = total
            if "total_parameters" in index_meta:
                index_meta["total_parameters"] = sum(_numel(t.shape) for t in stored)
            index = {"metadata": index_meta, "weight_map": {n: f for f, names in plan.items() for n in names}}
            (tmp / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for path, snapshot_path in extras.items():
            (tmp / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp / path).write_bytes(art.read_file(snapshot_path))

    return _atomic_directory(Path(dst), write, overwrite)


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
