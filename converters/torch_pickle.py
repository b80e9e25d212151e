"""torch pickle checkpoints <-> lamina snapshots.

Reads plain state dicts (``.pt .pth .bin``), Hugging Face ``pytorch_model.bin`` and sharded
``pytorch_model-0000N-of-0000M.bin`` + index, training checkpoints (model + optimizer + epoch +
step + scheduler under the usual keys) and PyTorch Lightning ``.ckpt``. Pickles are read with
torch's weights-only allow-list (memory-mapped for zip checkpoints); anything that needs other
globals is refused, listing them, unless the caller passes ``trust_pickle=True``.

Writes a state dict or, with ``checkpoint=True``, a training checkpoint
``{"model", "optimizer", "epoch", "step", ...}`` loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina._errors import (
    FormatError,
    NotFoundError,
    StateMismatchError,
    UnsafeInputError,
)
from lamina.format.manifest import plain_value
from lamina.frameworks.collect import collect_tensors
from lamina.frameworks.torch import capture_state_dict, state_dict_ids
from lamina.repo.repository import open_location
from lamina.repo.targets import write_snapshot
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.training_state import (
    TRAINING_TENSORS,
    pack_training_extra,
    unpack_training_extra,
)
from lamina.snapshot.writer import atomic_file_write, check_file_destination
from lamina.storage.paths import check_relative_path

from ._memory import PageReleaser
from ._torch_align import Shape, assign_groups, shape_fits
from ._torch_optim_class import optimizer_class

__all__ = ["to_lamina", "from_lamina", "TRAINING_TENSORS"]

MODEL_KEYS = ("model", "model_state_dict", "state_dict", "module", "net", "network")
OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optim", "opt")
SCHEDULER_KEYS = ("scheduler", "lr_scheduler", "scheduler_state_dict", "lr_scheduler_state_dict")
STEP_KEYS = ("step", "global_step", "iteration", "iter")
LIGHTNING_MARKERS = ("pytorch-lightning_version", "optimizer_states", "lr_schedulers", "loops")
HF_INDEX = "pytorch_model.bin.index.json"
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class _Parsed:
    model: dict[str, Any]
    optimizer: dict[str, Any] | None = None
    epoch: Any = None
    step: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ reading
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip local file header up to the name and extra lengths


def _check_zip(path: Path) -> None:
    """Refuse zip checkpoints that are compressed (zip bombs), cut short, or ambiguous.

    torch reads entries through the central directory, by exact name, under the first entry's
    folder, and reads one copy of a name listed twice. So a duplicated name, an entry outside that
    folder, an unsafe name, a local header naming another entry, two entries sharing bytes, or bytes
    before the first entry (torch then reads a pickle) mean torch and other zip readers (scanners,
    ``unzip``) see different checkpoints: refused.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            directory_start = zf.start_dir
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise FormatError(f"{path}: corrupt zip archive ({exc})") from None
    if not infos:
        raise FormatError(f"{path}: an empty zip archive, not a torch checkpoint")
    first = infos[0].filename
    if "/" not in first:
        raise FormatError(f"{path}: zip entry {first!r} is not in a folder; torch checkpoints keep every entry "
                          "under one folder (<name>/data.pkl, <name>/data/0, ...)")
    root = first.split("/", 1)[0]
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        check_relative_path(name[:-1] if info.is_dir() else name, f"{path}: zip entry")
        if name in seen:
            raise FormatError(f"{path}: zip entry {name!r} appears twice; torch would read one copy and other "
                              "readers the other, so the checkpoint is ambiguous")
        seen.add(name)
        if name.split("/", 1)[0] != root:
            raise FormatError(f"{path}: zip entry {name!r} is outside the folder {root + '/'!r} that torch reads; "
                              "entries under several folders make the checkpoint ambiguous")
        if info.compress_type != zipfile.ZIP_STORED:
            raise FormatError(f"{path}: entry {name!r} is compressed; torch checkpoints store "
                              "entries uncompressed (refusing a possible zip bomb)")
    spans = []
    try:
        with open(path, "rb") as f:
            for info in infos:
                f.seek(info.header_offset)
                head = f.read(_LOCAL_HEADER.size)
                if len(head) < _LOCAL_HEADER.size or not head.startswith(b"PK\x03\x04"):
                    raise FormatError(f"{path}: entry {info.filename!r} has no local header at offset "
                                      f"{info.header_offset} (corrupt or truncated archive)")
                name_len, extra_len = _LOCAL_HEADER.unpack(head)[-2:]
                local = f.read(name_len)
                central = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
                if local != central:
                    raise FormatError(f"{path}: entry {info.filename!r} is named {local[:200]!r} in its local "
                                      "header; readers would disagree on its name, so the checkpoint is ambiguous")
                end = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
                if end > directory_start:
                    raise FormatError(f"{path}: entry {info.filename!r} extends past the end of the file's data "
                                      "(truncated?)")
                spans.append((info.header_offset, end, info.filename))
    except OSError as exc:
        raise FormatError(f"{path}: cannot read the zip archive ({exc})") from None
    spans.sort()
    if spans[0][0] > 0:  # torch tells a zip checkpoint by its first bytes: it would read the file as a pickle
        raise FormatError(f"{path}: {spans[0][0]} bytes come before the first zip entry; torch would read the file "
                          "as a legacy pickle and zip readers as an archive, so the checkpoint is ambiguous")
    for (_, end, name), (start, _, other) in zip(spans, spans[1:]):
        if start < end:
            raise FormatError(f"{path}: zip entries {name!r} and {other!r} overlap; refusing an ambiguous checkpoint")


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_SAFE_PREFIXES = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset", "_codecs.encode",
                  "numpy.core.multiarray._reconstruct", "numpy.dtype", "numpy.ndarray")


def _pickle_globals(path: Path) -> list[str] | None:
    """Globals the pickles in ``path`` reference, found by parsing opcodes (nothing is executed);
    None when the bytes are not pickles. Legacy torch files are several pickles in a row."""
    import pickletools

    found: list[str] = []
    try:
        with open(path, "rb") as f:
            pickles = 0
            while f.peek(1):
                strings: list[str] = []
                for op, arg, _ in pickletools.genops(f):
                    if op.name in _STRING_OPS and isinstance(arg, str):
                        strings.append(arg)
                    elif op.name == "GLOBAL" and isinstance(arg, str):
                        found.append(arg.replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                pickles += 1
                if pickles >= 4:  # magic, protocol, sys info, data: the legacy layout
                    break
    except Exception:  # pickletools raises ValueError and others on non-pickle bytes
        if not found:
            return None
    return sorted(set(found))


def _swaps_bytes(path: Path) -> bool:
    """Whether torch byte-swaps this checkpoint's tensors on load (in place, in the mapping)."""
    import sys

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()  # for a loaded checkpoint: checked, one folder, no duplicates
            record = f"{names[0].split('/', 1)[0]}/byteorder" if names else ""
            order = zf.read(record).decode("ascii", "replace").strip() if record in names else "little"
    except (zipfile.BadZipFile, OSError, KeyError):
        return True  # unknown: assume pages may be dirty
    return order != sys.byteorder


def _load_pickle(path: Path, trust_pickle: bool) -> Any:
    import torch

    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        _check_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        if trust_pickle:
            raise FormatError(f"{path}: cannot unpickle ({exc})") from None
        needed: list[str] | None = []
        if is_zip:
            try:
                needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except Exception:  # the listing is a courtesy; the refusal stands either way
                needed = []
        else:
            needed = _pickle_globals(path)
            if needed is None:
                raise FormatError(f"{path}: not a readable torch checkpoint (neither a zip archive nor a pickle)") from None
            needed = [g for g in needed if not g.startswith(_SAFE_PREFIXES)]
        listing = ", ".join(needed) if needed else str(exc).splitlines()[0]
        raise UnsafeInputError(
            f"{path}: refusing to unpickle: it needs Python objects outside torch's weights-only "
            f"allow-list ({listing}); nothing was executed. If you trust its author, pass "
            "trust_pickle=True (CLI: --trust-pickle)."
        ) from None
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    except Exception as exc:  # torch reports corrupt archives with RuntimeError, EOFError, ...
        raise FormatError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def _is_tensor_dict(value: Any) -> bool:
    import torch

    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _load_hf_sharded(directory: Path, trust_pickle: bool) -> dict[str, Any]:
    index_path = directory / HF_INDEX
    try:
        index = json.loads(index_path.read_text("utf-8"))
        weight_map = index["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"{index_path}: not a valid Hugging Face index ({type(exc).__name__}: {exc})") from None
    model: dict[str, Any] = {}
    for shard in shards:
        check_relative_path(shard, f"{index_path}: weight_map")
        part = _load_pickle(directory / shard, trust_pickle)
        if not _is_tensor_dict(part):
            raise FormatError(f"{directory / shard}: expected a state dict of tensors")
        model.update(part)
    missing = sorted(set(weight_map) - set(model))
    if missing:
        raise FormatError(f"{index_path}: tensors listed but absent from their shards: {missing[:5]}")
    return model


def _first_key(obj: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((k for k in keys if k in obj), None)


def _interpret(obj: Any, path: Path, optimizer_index: int | None) -> _Parsed:
    """Find the model, optimizer and training state in a loaded checkpoint."""
    import torch

    if isinstance(obj, torch.nn.Module):  # only reachable with trust_pickle: a whole pickled module
        return _Parsed(model=dict(obj.state_dict()))
    if _is_tensor_dict(obj):
        return _Parsed(model=dict(obj))
    if not isinstance(obj, Mapping):
        raise FormatError(f"{path}: holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    lightning = "state_dict" in obj and any(k in obj for k in LIGHTNING_MARKERS)
    if lightning and not _is_tensor_dict(obj["state_dict"]):
        raise FormatError(f"{path}: a Lightning checkpoint whose state_dict is not a mapping of tensors")
    model_key = "state_dict" if lightning else _first_key(obj, [k for k in MODEL_KEYS if _is_tensor_dict(obj.get(k))])
    if model_key is None:
        raise FormatError(f"{path}: no model state dict found; top-level keys are {sorted(map(str, obj))[:12]}, "
                          f"expected a state dict or one of {list(MODEL_KEYS)}")
    parsed = _Parsed(model=dict(obj[model_key]))
    used = {model_key}
    if lightning:
        states = obj.get("optimizer_states") or []
        if not isinstance(states, (list, tuple)):
            raise FormatError(f"{path}: optimizer_states must be a list, got {type(states).__name__}")
        if len(states) > 1 and optimizer_index is None:
            raise FormatError(f"{path}: holds {len(states)} optimizers; lamina stores one: pass "
                              "optimizer_index=i (CLI: --optimizer-index i)")
        if optimizer_index is not None and not 0 <= optimizer_index < len(states):
            raise FormatError(f"{path}: optimizer_index {optimizer_index} is out of range; the checkpoint "
                              f"holds {len(states)} optimizer(s)")
        if states:
            parsed.optimizer = states[optimizer_index or 0]
        used |= {"optimizer_states"}
        parsed.step, parsed.epoch = obj.get("global_step"), obj.get("epoch")
        used |= {"global_step", "epoch"}
    else:
        opt_key = _first_key(obj, OPTIMIZER_KEYS)
        if opt_key is not None:
            parsed.optimizer = obj[opt_key]
            used.add(opt_key)
        step_key = _first_key(obj, STEP_KEYS)
        parsed.step = obj.get(step_key) if step_key else None
        parsed.epoch = obj.get("epoch")
        used |= {step_key, "epoch"}
    scheduler_key = _first_key(obj, SCHEDULER_KEYS)
    if scheduler_key is not None:
        parsed.extra["scheduler"] = obj[scheduler_key]
        used.add(scheduler_key)
    for key, value in obj.items():
        if key not in used:
            parsed.extra[str(key)] = value
    return parsed


# --------------------------------------------------------------------- optimizer id -> name
_NAMES_HINT = ("pass param_names (CLI: --param-names FILE, a JSON list of names in optimizer id order) "
               "or save param_names with the optimizer (torch >= 2.5 does so when built from named_parameters())")


def _state_shapes(opt_sd: Any, where: str) -> list[list[Shape]]:
    """For each param group, for each of its parameters, the shapes of its state tensors (0-d
    tensors such as ``step`` say nothing about the parameter; no state gives no shapes)."""
    import torch

    state_dict_ids(opt_sd, where)  # validates state and param_groups
    state = {repr(pid): s for pid, s in opt_sd["state"].items()}
    out = []
    for group in opt_sd["param_groups"]:
        shapes = []
        for pid in group["params"]:
            slots = state.get(repr(pid))
            values = slots.values() if isinstance(slots, Mapping) else ()
            shapes.append(sorted({tuple(v.shape) for v in values if isinstance(v, torch.Tensor) and v.dim() > 0}))
        out.append(shapes)
    return out


def _names_from_model(opt_sd: Any, model: Mapping[str, Any], aliases: Mapping[str, str], where: str) -> list[str]:
    """Align optimizer ids with the model's parameter entries, checking shapes (see _torch_align).

    Parameters are the floating-point entries that are not batch-norm statistics, with tied
    duplicates removed (as ``named_parameters()`` does), in state-dict order.
    """
    candidates = [(name, tuple(t.shape)) for name, t in model.items()
                  if name not in aliases and (t.is_floating_point() or t.is_complex())
                  and name.rsplit(".", 1)[-1] not in _BUFFER_SUFFIXES]
    groups = _state_shapes(opt_sd, where)
    if len(groups) == 1 and len(groups[0]) == len(candidates):
        # one group over every candidate: the plain case, with a precise message on a mismatch
        return _check_shapes(opt_sd, [n for n, _ in candidates], model, where)
    return [n for members in assign_groups(candidates, groups, where, _NAMES_HINT) for n in members]


def _check_shapes(opt_sd: Any, names: list[str], model: Mapping[str, Any], where: str) -> list[str]:
    """Every tensor slot of parameter i must fit the model tensor named names[i]."""
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise StateMismatchError(f"{where}: param_names name {twice[:5]} more than once; {_NAMES_HINT}")
    shapes = [s for group in _state_shapes(opt_sd, where) for s in group]
    for position, (pid, name, slots) in enumerate(zip(state_dict_ids(opt_sd, where), names, shapes)):
        if not shape_fits(tuple(model[name].shape), slots):
            raise StateMismatchError(f"{where}: parameter #{position} (id {pid!r}) has state of shape "
                                     f"{[list(s) for s in slots]} but its name {name!r} is a model tensor of shape "
                                     f"{list(model[name].shape)}; {_NAMES_HINT}")
    return names


def _param_names(opt_sd: Any, model: Mapping[str, Any], aliases: Mapping[str, str], explicit: Any,
                 where: str) -> list[str]:
    ids = state_dict_ids(opt_sd, where)
    if explicit is not None:
        if isinstance(explicit, (str, os.PathLike)):
            try:
                explicit = json.loads(Path(explicit).read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise FormatError(f"param_names file {explicit}: {exc}") from None
        if isinstance(explicit, Mapping):
            by_id = {str(k): v for k, v in explicit.items()}
            names = [by_id.get(str(pid)) for pid in ids]
        elif isinstance(explicit, (list, tuple)):
            names = list(explicit)
        else:
            raise FormatError(f"{where}: param_names must be a list of names, a {{id: name}} mapping or a JSON "
                              f"file holding one, got {type(explicit).__name__}")
        if len(names) != len(ids) or not all(isinstance(n, str) and n in model for n in names):
            raise StateMismatchError(f"{where}: param_names must name a model tensor for each of the "
                                     f"{len(ids)} optimizer parameters (in id order)")
        return _check_shapes(opt_sd, names, model, where)
    recorded = [g.get("param_names") for g in opt_sd["param_groups"]]
    if all(isinstance(r, list) and len(r) == len(g["params"]) for r, g in zip(recorded, opt_sd["param_groups"])):
        names = [n for r in recorded for n in r]
        if all(isinstance(n, str) and n in model for n in names):
            return _check_shapes(opt_sd, names, model, where)
    return _names_from_model(opt_sd, model, aliases, where)


# ---------------------------------------------------------------- training state (no pickles)
# ------------------------------------------------------------------------------- public API
def to_lamina(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    param_names: Sequence[str] | Mapping[Any, str] | str | os.PathLike[str] | None = None,
    optimizer_index: int | None = None,
    info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    durable: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Artifact:
    """Convert a torch pickle checkpoint (file or Hugging Face sharded directory) to a snapshot.

    Args:
        src: ``.pt/.pth/.bin/.ckpt`` file, or a directory with ``pytorch_model.bin[.index.json]``.
        dst: the snapshot directory to write.
        trust_pickle: allow globals outside torch's weights-only allow-list (runs code from
            ``src``!). Off by default; never turned on implicitly.
        param_names: optimizer parameter names in id order (list, ``{id: name}``, or a JSON file),
            when the checkpoint does not record them and alignment with the model is ambiguous.
        optimizer_index: which optimizer of a Lightning checkpoint with several.

    Example:
        >>> import torch, tempfile, os
        >>> from lamina.converters import torch_pickle
        >>> d = tempfile.mkdtemp(); src = os.path.join(d, "m.pt")
        >>> torch.save({"fc.weight": torch.ones(2, 2)}, src)
        >>> torch_pickle.to_lamina(src, os.path.join(d, "snap")).layers
        ['fc']
    """
    src_path = Path(src)
    mapped = [src_path]
    if src_path.is_dir():
        if (src_path / HF_INDEX).is_file():
            obj: Any = _load_hf_sharded(src_path, trust_pickle)
            mapped = list(src_path.glob("*.bin"))
        elif (src_path / "pytorch_model.bin").is_file():
            mapped = [src_path / "pytorch_model.bin"]
            obj = _load_pickle(mapped[0], trust_pickle)
        else:
            raise FormatError(f"{src_path}: directory has neither {HF_INDEX} nor pytorch_model.bin")
    elif src_path.is_file():
        obj = _load_pickle(src_path, trust_pickle)
    else:
        raise NotFoundError(f"{src_path}: no such file or directory")
    parsed = _interpret(obj, src_path, optimizer_index)
    collected = collect_tensors(parsed.model)
    captured = None
    if parsed.optimizer is not None:
        where = f"{src_path}: optimizer"
        names = _param_names(parsed.optimizer, parsed.model, collected.aliases, param_names, where)
        captured = capture_state_dict(parsed.optimizer, names, optimizer_class(parsed.optimizer), where)
    dropped: list[str] = []
    extra, files = pack_training_extra(parsed.extra, dropped)
    step = plain_value(parsed.step, "step")
    epoch = plain_value(parsed.epoch, "epoch")
    extra["source"] = {"format": "torch", "file": src_path.name, "trust_pickle": trust_pickle}
    if dropped:
        extra["dropped"] = dropped
    training = None
    if parsed.optimizer is not None or step is not None or epoch is not None or parsed.extra:
        training = {"step": step if isinstance(step, int) else None,
                    "epoch": epoch if isinstance(epoch, (int, float)) else None, "extra": extra}
    # Dropping mapped pages is only safe while they are clean copies of the file: a byte-swapped
    # (big-endian) checkpoint was rewritten in place by torch.load, so its pages must stay.
    clean = all(zipfile.is_zipfile(p) and not _swaps_bytes(p) for p in mapped if p.is_file())
    return write_snapshot(dst, collected, optimizer=captured, info=info, training=training, files=files or None,
                          overwrite=overwrite, durable=durable, progress=progress,
                          after_shard=PageReleaser(mapped) if clean else None)


def _checkpoint(art: Artifact) -> dict[str, Any]:
    out: dict[str, Any] = {"model": art.state_dict("pt")}
    if art.optimizer is not None:
        out["optimizer"] = art.optimizer_state_dict()
    training = art.training
    extra = unpack_training_extra(art)
    extra.pop("source", None)
    extra.pop("dropped", None)
    if training.epoch is not None:
        out["epoch"] = training.epoch
    if training.step is not None:
        out["step"] = training.step
    if training.metrics:
        out["metrics"] = dict(training.metrics)
    for key, value in extra.items():
        out.setdefault(key, value)
    return out


def from_lamina(
    src: str | os.PathLike[str] | Artifact,
    dst: str | os.PathLike[str],
    *,
    checkpoint: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a snapshot as a torch pickle (protocol 2, loadable with ``weights_only=True``).

    Args:
        src: a snapshot path or an opened Artifact.
        dst: the ``.pt`` file to write (atomically: temporary file + rename).
        checkpoint: write ``{"model", "optimizer", "epoch", "step", ...}`` (optimizer state with
            the integer ids torch expects, in the saved group order) instead of a state dict.

    Example:
        >>> import torch, numpy as np, tempfile, os, lamina
        >>> from lamina.converters import torch_pickle
        >>> d = tempfile.mkdtemp()
        >>> _ = lamina.save({"w": np.arange(3, dtype="float32")}, os.path.join(d, "snap"))
        >>> out = torch_pickle.from_lamina(os.path.join(d, "snap"), os.path.join(d, "w.pt"))
        >>> torch.load(out, weights_only=True)["w"].tolist()
        [0.0, 1.0, 2.0]
    """
    import torch

    art = src if isinstance(src, Artifact) else open_location(src)
    check_file_destination(dst, overwrite=overwrite)  # fail before reading the snapshot
    obj: Any = _checkpoint(art) if checkpoint else art.state_dict("pt")
    # protocol 2: torch's weights-only unpickler rejects protocol-4 opcodes
    return atomic_file_write(dst, lambda tmp: torch.save(obj, tmp, pickle_protocol=2), overwrite=overwrite)
