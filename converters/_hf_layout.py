"""Hugging Face safetensors layouts, read from headers only.

A source is one ``.safetensors`` file or a directory holding ``model.safetensors`` (single),
``model.safetensors.index.json`` + the shards it names (sharded), or ``adapter_model.safetensors``
(a PEFT adapter) — checked in that order, as transformers does. Every header is parsed by lamina's
strict parser (bounds, holes, overlaps, dtypes); the index must agree with the shards exactly.
The directory's other files are listed for carrying, each checked: a relative path that stays
inside the directory (symbolic links are resolved; a Hugging Face cache snapshot may also point
into its repository's ``blobs/``), a regular file. Nothing here reads tensor data.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina._errors import FormatError, NotFoundError, UnsafePathError
from lamina.format.shards import ShardEntry, read_header
from lamina.snapshot.writer import RESERVED_TOP_LEVEL
from lamina.storage.local import open_regular
from lamina.storage.paths import check_relative_path

from ._hf_ties import resolve_ties

__all__ = ["Layout", "HfTensor", "read_layout", "DEFAULT_EXCLUDE", "SINGLE", "INDEX", "ADAPTER",
           "ADAPTER_CONFIG", "CONFIG", "RENAMED_PREFIX"]

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
ADAPTER = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
CONFIG = "config.json"
RENAMED_PREFIX = "hf/"  # where a file whose name lamina reserves (weights/, manifest.msgpack, ...) is kept
#: weights in other formats (pickles, Keras/TF, Flax, GGUF, ONNX), not carried by default: they
#: duplicate the safetensors weights, and pickles never go into a snapshot.
DEFAULT_EXCLUDE = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.gguf", "*.onnx", "*.onnx_data",
                   "*.ot", "*.tflite", "*.bin.index.json", "*.h5.index.json", "*.msgpack.index.json")
_NOT_MODEL = (".git/", ".cache/huggingface/")  # version control and `hf download --local-dir` bookkeeping
_MAX_JSON = 64 << 20


@dataclass(frozen=True)
class HfTensor:
    name: str
    file: str  # relative to the root
    entry: ShardEntry  # absolute byte range in that file


@dataclass
class Layout:
    root: Path
    kind: str  # "single" | "sharded" | "adapter" | "file"
    weights: list[str]  # weight files, relative to root
    sizes: dict[str, int]
    paths: dict[str, Path]  # weight file -> the checked (resolved) path to read
    metadata: dict[str, dict[str, str]]  # __metadata__ of each weight file
    tensors: list[HfTensor]
    ties: dict[str, str] = field(default_factory=dict)  # alias -> stored tensor
    index_metadata: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    extras: dict[str, Path] = field(default_factory=dict)  # relative path -> file to copy
    skipped: list[str] = field(default_factory=list)  # excluded by pattern

    def snapshot_path(self, relpath: str) -> str:
        """Where an extra file goes in a snapshot: its own path, unless lamina reserves it."""
        return RENAMED_PREFIX + relpath if relpath.split("/", 1)[0] in RESERVED_TOP_LEVEL else relpath


# ---------------------------------------------------------------------------------------- files
def allowed_roots(root: Path) -> list[Path]:
    """Where files of ``root`` may resolve to: inside it, and for a Hugging Face cache snapshot
    (``models--org--name/snapshots/<commit>``) inside that repository's ``blobs/``."""
    real = Path(os.path.realpath(root))
    roots = [real]
    repo = real.parent.parent
    if real.parent.name == "snapshots" and repo.name.startswith("models--") and (repo / "blobs").is_dir():
        roots.append(repo / "blobs")
    return roots


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def checked_file(root: Path, relpath: str, roots: Sequence[Path], where: str) -> Path:
    """The resolved path of ``root/relpath``, checked to stay inside ``roots`` and to be a regular
    file (callers open the resolved path, so a link swapped afterwards cannot redirect them)."""
    check_relative_path(relpath, where)
    path = root / relpath
    real = Path(os.path.realpath(path))
    if not _inside(real, roots):
        raise UnsafePathError(f"{where}: {relpath!r} resolves to {real}, outside {root}; refusing to read it")
    if not real.exists():
        raise NotFoundError(f"{where}: {relpath!r} is not in {root}")
    if real.is_dir():
        raise FormatError(f"{where}: {relpath!r} is a directory or a link to one; only regular files are read")
    if not real.is_file():
        raise FormatError(f"{where}: {relpath!r} is not a regular file (a FIFO, socket or device)")
    return real


def _pread(fd: int, start: int, end: int) -> bytes:
    out = bytearray()
    while start + len(out) < end:
        got = os.pread(fd, end - start - len(out), start + len(out))
        if not got:
            break
        out += got
    return bytes(out)


def read_file_header(path: Path, where: str) -> tuple[dict[str, str], dict[str, ShardEntry], int]:
    """``(__metadata__, entries by name, file size)`` of a safetensors file, strictly checked."""
    with open_regular(path, where) as f:
        size = os.fstat(f.fileno()).st_size
        metadata, entries = read_header(lambda a, b: _pread(f.fileno(), a, b), size, where)
    return metadata, entries, size


def _read_json(path: Path, where: str) -> Any:
    with open_regular(path, where) as f:
        data = f.read(_MAX_JSON + 1)
    if len(data) > _MAX_JSON:
        raise FormatError(f"{where}: larger than {_MAX_JSON >> 20} MiB; not a Hugging Face JSON file")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{where}: not valid JSON ({exc})") from None


def _walk(root: Path, roots: Sequence[Path], rel: str = "") -> Iterator[tuple[str, bool]]:
    """``(relative path, is a directory)`` of every entry below ``root``; symbolic links are not
    followed into directories."""
    try:
        entries = sorted(os.scandir(root / rel if rel else root), key=lambda e: e.name)
    except OSError as exc:
        raise FormatError(f"{root / rel}: cannot list it ({exc.strerror or exc})") from None
    for entry in entries:
        relpath = f"{rel}/{entry.name}" if rel else entry.name
        is_dir = entry.is_dir(follow_symlinks=False)
        yield relpath, is_dir
        if is_dir and not any((relpath + "/").startswith(p) for p in _NOT_MODEL):
            yield from _walk(root, roots, relpath)


def list_extras(root: Path, roots: Sequence[Path], consumed: Collection[str],
                exclude: Sequence[str]) -> tuple[dict[str, Path], list[str]]:
    """The files to carry (checked) and those skipped by ``exclude`` patterns (``fnmatch``, on the
    relative path)."""
    extras: dict[str, Path] = {}
    skipped: list[str] = []
    for relpath, is_dir in _walk(root, roots):
        if is_dir or relpath in consumed or any((relpath + "/").startswith(p) for p in _NOT_MODEL):
            continue
        if any(fnmatch.fnmatchcase(relpath, pattern) for pattern in exclude):
            skipped.append(relpath)
            continue
        where = f"{root}: file"
        extras[relpath] = checked_file(root, relpath, roots, where)
    return extras, skipped


# ---------------------------------------------------------------------------------------- layout
def _sharded(root: Path, roots: Sequence[Path]) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    where = f"{root / INDEX}"
    index = _read_json(checked_file(root, INDEX, roots, where), where)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError(f"{where}: not a Hugging Face index (needs a non-empty \"weight_map\": {{tensor: file}})")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise FormatError(f"{where}: weight_map must map tensor names to file names")
    metadata = index.get("metadata", {})
    if not isinstance(metadata, dict):
        raise FormatError(f"{where}: \"metadata\" must be an object")
    for shard in set(weight_map.values()):
        check_relative_path(shard, f"{where}: weight_map")
        if not shard.endswith(".safetensors"):
            raise FormatError(f"{where}: weight_map names {shard!r}, which is not a .safetensors file")
    return sorted(set(weight_map.values())), weight_map, metadata


def read_layout(src: str | os.PathLike[str], *, tied: Mapping[str, str] | bool | None = None,
                exclude: Sequence[str] = DEFAULT_EXCLUDE, extras: bool = True,
                roots: Sequence[Path] | None = None) -> Layout:
    """Read a ``.safetensors`` file or a Hugging Face directory (headers, index, config) and list
    the files to carry. ``roots``: where files may resolve to (default: :func:`allowed_roots`)."""
    path = Path(src)
    if path.is_file():
        root, kind, files = path.parent, "file", [path.name]
    elif path.is_dir():
        root = path
        if (path / SINGLE).exists() or (path / SINGLE).is_symlink():
            kind, files = "single", [SINGLE]
        elif (path / INDEX).exists() or (path / INDEX).is_symlink():
            kind, files = "sharded", []
        elif (path / ADAPTER).exists() or (path / ADAPTER).is_symlink():
            kind, files = "adapter", [ADAPTER]
        else:
            raise FormatError(f"{path}: no {SINGLE}, {INDEX} or {ADAPTER}; not a Hugging Face safetensors directory")
    elif path.exists():
        raise FormatError(f"{path}: not a regular file or directory")
    else:
        raise NotFoundError(f"{path}: no such file or directory")
    roots = list(roots) if roots is not None else allowed_roots(root)
    weight_map: dict[str, str] | None = None
    index_metadata: dict[str, Any] = {}
    if kind == "sharded":
        files, weight_map, index_metadata = _sharded(root, roots)
    layout = Layout(root, kind, files, {}, {}, {}, [], index_metadata=index_metadata)
    owner: dict[str, str] = {}
    for file in files:
        where = f"{root / file}"
        target = checked_file(root, file, roots, where) if kind != "file" else path
        metadata, entries, size = read_file_header(target, where)
        layout.sizes[file], layout.metadata[file], layout.paths[file] = size, metadata, target
        for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
            if entry.name in owner:
                raise FormatError(f"{root}: tensor {entry.name!r} is in both {owner[entry.name]!r} and {file!r}; "
                                  "refusing an ambiguous checkpoint")
            if weight_map is not None and weight_map.get(entry.name) != file:
                listed = weight_map.get(entry.name)
                raise FormatError(f"{root / INDEX}: shard {file!r} holds {entry.name!r}, which the index "
                                  + (f"maps to {listed!r}" if listed else "does not list"))
            owner[entry.name] = file
            layout.tensors.append(HfTensor(entry.name, file, entry))
    if weight_map is not None:
        absent = sorted(n for n, f in weight_map.items() if owner.get(n) != f)
        if absent:
            raise FormatError(f"{root / INDEX}: lists {absent[:5]} in shards that do not hold them")
    if kind in ("single", "sharded") and ((root / CONFIG).exists() or (root / CONFIG).is_symlink()):
        config = _read_json(checked_file(root, CONFIG, roots, f"{root / CONFIG}"), f"{root / CONFIG}")
        layout.config = config if isinstance(config, dict) else None
    layout.ties = resolve_ties(tied, layout.config, owner, str(path))
    if extras and kind != "file":
        consumed = set(files) | ({INDEX} if kind == "sharded" else set())
        layout.extras, layout.skipped = list_extras(root, roots, consumed, exclude)
    return layout
