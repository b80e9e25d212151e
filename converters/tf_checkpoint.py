"""TensorFlow checkpoints -> lamina snapshots (reading only).

Reads TF2 object-based checkpoints (``tf.train.Checkpoint``: ``ckpt-N.index`` + ``.data-*``),
TF1 name-based ones (``tf.compat.v1.train.Saver``, the layout of the original BERT release) and
the ``variables/`` of a SavedModel, with TensorFlow's own checkpoint reader. No graph or function
is ever loaded or run: ``.meta`` files and ``saved_model.pb`` are not opened.

Before TensorFlow reads anything, lamina parses the index itself (``_tf_bundle``) and checks that
every variable has a dtype lamina stores and that its bytes are inside the data files, so nothing
allocates more than the input's real size. Then each variable is read when its layer's shard is
written (one layer at a time per writer thread) and its bytes are stored unchanged.

Names are the checkpoint's keys, unchanged (``model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE``,
``bert/encoder/layer_0/attention/self/query/kernel``); a layer is the key without its
``/.ATTRIBUTES/...`` suffix and without its last component. Optimizer slots are grouped by
parameter as ``_tf_optim`` describes; ``tf/checkpoint.json`` records which checkpoint key each slot
and optimizer scalar came from (and the variables' own names from the object graph), and
``tf/object_graph.pb`` keeps the object graph as stored. See docs/tf-checkpoints.md.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina._errors import FormatError, IntegrityError, LaminaError, NotFoundError
from lamina.format.dtypes import dtype_info, numpy_dtype
from lamina.frameworks import registry
from lamina.frameworks.base import Collected, TensorSource
from lamina.frameworks.optim import CapturedOptimizer
from lamina.repo.targets import write_snapshot
from lamina.snapshot.artifact import Artifact

from ._tf_bundle import DTYPE_CODES, Bundle, check_string_scalar, read_bundle
from ._tf_optim import Node, Plan, plan_by_names, plan_object_graph

__all__ = ["to_lamina", "layer_of", "resolve_prefix", "OBJECT_GRAPH"]

OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_ATTRIBUTES = "/.ATTRIBUTES/"
RECORD = "tf/checkpoint.json"
GRAPH_FILE = "tf/object_graph.pb"


def layer_of(name: str) -> str:
    """The layer of a checkpoint key: without ``/.ATTRIBUTES/...``, then without its last part.

    Example:
        >>> layer_of("model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"), layer_of("bert/pooler/dense/bias")
        ('model/dense', 'bert/pooler/dense')
    """
    base = name.split(_ATTRIBUTES, 1)[0]
    return base.rpartition("/")[0] or base


def resolve_prefix(src: str | os.PathLike[str]) -> Path:
    """The checkpoint prefix that ``src`` names: a directory with a ``checkpoint`` state file (its
    latest checkpoint), a SavedModel directory (``variables/variables``), a prefix, its ``.index``
    file, or one of its ``.data-*`` files.

    Example:
        >>> resolve_prefix("runs/ckpts/ckpt-3.index")  # doctest: +SKIP
        PosixPath('runs/ckpts/ckpt-3')
    """
    path = Path(src)
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():  # never opened
            prefix = path / "variables" / "variables"
            if not Path(f"{prefix}.index").is_file():
                raise NotFoundError(f"{path}: a SavedModel without variables/variables.index (it has no variables)")
            return prefix
        indexes = sorted(p for p in path.glob("*.index") if p.is_file())
        if (path / "checkpoint").is_file():
            import tensorflow as tf

            with _tf_errors(f"{path / 'checkpoint'}"):
                state = tf.train.get_checkpoint_state(str(path))
            latest = state.model_checkpoint_path if state is not None else ""
            # The state file may hold absolute paths from the machine that wrote it: only the last
            # part is used, inside this directory (never a checkpoint elsewhere).
            if latest and Path(f"{path / Path(latest).name}.index").is_file():
                return path / Path(latest).name
            raise NotFoundError(f"{path}: the checkpoint state file names {Path(latest).name or 'no checkpoint'!r}, "
                                f"which is not here; pass one of {[p.name for p in indexes][:5]} instead")
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        raise FormatError(f"{path}: not a TensorFlow checkpoint directory (no 'checkpoint' state file, "
                          f"{len(indexes)} .index files); pass a checkpoint prefix such as {path}/ckpt-1")
    if path.suffix == ".index":
        return path.with_suffix("")
    if Path(f"{path}.index").exists():
        return path
    head, dot, tail = path.name.rpartition(".data-")
    if dot and tail.count("-of-") == 1:
        return path.with_name(head)
    raise NotFoundError(f"{path}: no TensorFlow checkpoint here (looked for {path.name}.index)")


# ------------------------------------------------------------------------------------ reading
@contextmanager
def _tf_errors(where: str, file: str | None = None) -> Iterator[None]:
    """TensorFlow's errors as lamina's: a missing file, damaged bytes, anything else malformed;
    ``file`` is what an IntegrityError lists as failed (default: ``where``)."""
    import tensorflow as tf

    try:
        yield
    except LaminaError:
        raise
    except tf.errors.OpError as exc:
        message = f"{where}: TensorFlow cannot read it ({(exc.message or str(exc)).splitlines()[0][:300]})"
        if exc.error_code == tf.errors.NOT_FOUND:
            raise NotFoundError(message) from None
        if exc.error_code == tf.errors.DATA_LOSS or "checksum" in message.lower():
            raise IntegrityError(message, [(file or where, "unreadable")]) from None
        raise FormatError(message) from None
    except (ValueError, TypeError, RuntimeError, MemoryError, OverflowError) as exc:
        raise FormatError(f"{where}: TensorFlow cannot read it ({type(exc).__name__}: {str(exc)[:300]})") from None


class _Reader:
    """TensorFlow's checkpoint reader over a checked bundle; one read at a time (the C++ reader
    keeps iterator state, and the writer's threads ask concurrently)."""

    def __init__(self, bundle: Bundle) -> None:
        import tensorflow as tf

        self.bundle, self.where = bundle, str(bundle.prefix)
        self._lock = threading.Lock()
        with _tf_errors(self.where):
            self._reader = tf.train.load_checkpoint(str(bundle.prefix))
            shapes = self._reader.get_variable_to_shape_map()
            dtypes = self._reader.get_variable_to_dtype_map()
        ours = {n: (e.shape, e.dtype) for n, e in bundle.entries.items()}
        theirs = {n: (tuple(shapes[n]), dtypes[n].as_datatype_enum) for n in shapes}
        if ours != theirs:  # two parsers of one index disagreeing means a forged or damaged index
            diff = sorted(set(ours.items()) ^ set(theirs.items()))[:3]
            raise IntegrityError(f"{self.where}.index: TensorFlow and lamina read the index differently: {diff}",
                                 [(f"{self.where}.index", "inconsistent")])

    def get(self, name: str) -> Any:
        with self._lock, _tf_errors(f"{self.where}: variable {name!r}", self.where):
            return self._reader.get_tensor(name)

    def array(self, name: str) -> Any:
        """A numeric variable as numpy, refused unless dtype and shape are the declared ones."""
        import numpy as np

        entry = self.bundle.entries[name]
        code = DTYPE_CODES[entry.dtype]
        value = np.asarray(self.get(name))
        if value.dtype != numpy_dtype(code) or value.shape != entry.shape:
            raise IntegrityError(f"{self.where}: variable {name!r} read back as {value.dtype}{list(value.shape)}, "
                                 f"declared {code}{list(entry.shape)}", [(f"{self.where}.index", "inconsistent")])
        return value


@dataclass(frozen=True)
class _Deferred(TensorSource):
    """A checkpoint variable read only when the writer asks for its bytes, so a conversion holds
    about one layer per writer thread, never the whole checkpoint."""

    read: Callable[[], Any] = field(default=lambda: None, compare=False, repr=False)

    def buffer(self) -> memoryview:
        return self.adapter.tensor_bytes(self.read())


def _source(reader: _Reader, name: str, key: str | None = None) -> TensorSource:
    entry = reader.bundle.entries[name]
    return _Deferred(key or name, dtype_info(DTYPE_CODES[entry.dtype]), entry.shape, name, registry.get("numpy"),
                     read=lambda: reader.array(name))


def _object_graph(reader: _Reader) -> tuple[list[Node], bytes]:
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    check_string_scalar(reader.bundle, OBJECT_GRAPH)
    raw = reader.get(OBJECT_GRAPH)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    try:
        graph.ParseFromString(raw)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise FormatError(f"{reader.where}: the object graph is not a TrackableObjectGraph ({exc})") from None
    nodes = []
    for proto in graph.nodes:
        value = next((a for a in proto.attributes if a.name == "VARIABLE_VALUE"), None)
        nodes.append(Node([(c.node_id, c.local_name) for c in proto.children],
                          value.checkpoint_key if value is not None else None,
                          value.full_name if value is not None else "",
                          [(s.original_variable_node_id, s.slot_name, s.slot_variable_node_id)
                           for s in proto.slot_variables]))
    return nodes, bytes(raw)


def _optimizer(reader: _Reader, plan: Plan) -> CapturedOptimizer:
    """Slots as deferred tensors under ``<param>/<slot>``; scalars as hyperparameters with dtype."""
    hyper: dict[str, Any] = {}
    for name, role in plan.scalars.items():
        code = DTYPE_CODES[reader.bundle.entries[name].dtype]
        if code == "C64":
            continue  # complex scalars cannot be inline values; they stay tensors
        hyper[f"{role}_value"] = reader.array(name).item()
        hyper[f"{role}_dtype"] = code
    captured = CapturedOptimizer(class_name="unknown", groups=[(list(plan.params), hyper)], framework="tensorflow",
                                 slots=plan.slot_names)
    for name, (param, slot) in plan.slots.items():
        captured.tensors.setdefault(param, {})[slot] = _source(reader, name, f"{param}/{slot}")
    return captured


def to_lamina(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    include_optimizer: bool = True,
    info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    durable: bool = True,
    progress: Callable[[int, int], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> Artifact:
    """Convert a TensorFlow checkpoint (TF2 object-based, TF1 ``Saver``, or a SavedModel's
    variables) to a snapshot, reading variables with TensorFlow's checkpoint reader only.

    Args:
        src: a checkpoint directory (its latest checkpoint), a prefix (``.../ckpt-3``), its
            ``.index`` file, or a SavedModel directory.
        include_optimizer: group optimizer slots by parameter (default); False keeps every
            variable, slots included, as a plain tensor.
        report: called with a message when optimizer variables stay plain tensors, and why.

    Raises:
        FormatError: a string, resource or other non-numeric variable (named), a malformed index.
        IntegrityError: data files too short for the index, damaged bytes (checksums).
        NotFoundError: no checkpoint there, or a missing data shard.

    Example:
        >>> import os, tempfile, tensorflow as tf, lamina
        >>> d = tempfile.mkdtemp(); m = tf.Module(); m.w = tf.Variable([1.0, 2.0])
        >>> prefix = tf.train.Checkpoint(m=m).save(os.path.join(d, "ckpt"))
        >>> lamina.open(lamina.convert(prefix, os.path.join(d, "snap"))).keys()
        ['m/w/.ATTRIBUTES/VARIABLE_VALUE', 'save_counter/.ATTRIBUTES/VARIABLE_VALUE']
    """
    import tensorflow as tf

    prefix = resolve_prefix(src)
    bundle = read_bundle(prefix, allow_strings=frozenset({OBJECT_GRAPH}))
    reader = _Reader(bundle)
    shapes = {n: e.shape for n, e in bundle.entries.items() if n != OBJECT_GRAPH}
    files: dict[str, Any] = {}
    notes: list[str] = []
    plan = None
    full_names: dict[str, str] = {}
    if OBJECT_GRAPH in bundle.entries:
        nodes, raw = _object_graph(reader)
        files[GRAPH_FILE] = raw
        full_names = {n.key: n.full_name for n in nodes if n.key in shapes and n.full_name}
        if include_optimizer:
            plan = plan_object_graph(nodes, shapes, notes)
    elif include_optimizer:
        plan = plan_by_names(shapes)
    captured, moved, scalars = None, set(), {}
    if plan is not None:
        captured = _optimizer(reader, plan)
        scalars = {n: r for n, r in plan.scalars.items() if f"{r}_value" in captured.groups[0][1]}
        moved = set(plan.slots) | set(scalars)
    tensors = [_source(reader, n) for n in sorted(shapes) if n not in moved]
    files[RECORD] = {"kind": "object" if OBJECT_GRAPH in bundle.entries else "name", "prefix": prefix.name,
                     "slots": {n: list(v) for n, v in sorted(plan.slots.items())} if plan else {},
                     "scalars": dict(sorted(scalars.items())), "full_names": dict(sorted(full_names.items()))}
    for note in notes:
        if report is not None:
            report(f"{prefix}: {note}")
    collected = Collected(tensors, {}, {"name": "tensorflow", "version": tf.__version__})
    name = prefix.parent.parent.name if prefix.name == "variables" and prefix.parent.name == "variables" \
        else prefix.name
    return write_snapshot(dst, collected, optimizer=captured, info=info or {"name": name}, files=files,
                          layer_of=layer_of, overwrite=overwrite, durable=durable, progress=progress)
