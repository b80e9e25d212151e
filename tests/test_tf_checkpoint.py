"""TensorFlow checkpoints in (``lamina.converters.tf_checkpoint``, ``lamina convert --from tf``).

Every checkpoint is written by TensorFlow in this module: ``tf.train.Checkpoint`` of a
``tf.Module`` trained one step with ``tf.compat.v1.train.AdamOptimizer`` (object graph with slot
variables), of a Keras 3 model and optimizer (slot lists, no slot variables), a
``tf.compat.v1.train.Saver`` checkpoint in the original BERT layout, a SavedModel, a partitioned
variable and a two-shard checkpoint. Each conversion is compared bit for bit with what
``tf.train.load_checkpoint(...).get_tensor`` returns, and the optimizer grouping with the live
optimizer's own slots.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from adversarial.tf_checkpoint import W, copy_checkpoint, rewrite_index  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from lamina.converters import tf_checkpoint  # noqa: E402
from lamina.converters._detect import detect_source  # noqa: E402
from lamina.converters._tf_optim import Node, plan_by_names, plan_object_graph  # noqa: E402

import lamina  # noqa: E402
from lamina.cli import cli  # noqa: E402

GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
V = "/.ATTRIBUTES/VARIABLE_VALUE"
v1 = tf.compat.v1


def _bits(rng: np.random.Generator, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Random bit patterns of ``dtype`` (NaN payloads, subnormals and all)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(rng.bytes(size), dtype=dtype).reshape(shape).copy()


def _assert_bitwise(got: np.ndarray, expected: Any, name: str) -> None:
    expected = np.asarray(expected)
    assert got.dtype.name == expected.dtype.name and got.shape == expected.shape, name
    assert got.tobytes() == expected.tobytes(), name


def _all_bitwise(art: lamina.Artifact, reader: Any, names: list[str]) -> None:
    for name in names:
        _assert_bitwise(art.tensor(name, framework="np"), reader.get_tensor(name), name)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def v1_adam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """tf.train.Checkpoint of a tf.Module with every dtype, one compat.v1 Adam step on two of them."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    model = tf.Module()
    model.w = tf.Variable(rng.standard_normal((3, 4)).astype("float32"))
    model.sub = tf.Module()
    model.sub.k = tf.Variable(rng.standard_normal((2, 2)))  # float64
    model.raw = {str(np.dtype(d)): tf.Variable(_bits(rng, d, (2, 3)), trainable=False)
                 for d in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")}
    model.raw["bfloat16"] = tf.Variable(_bits(rng, ml_dtypes.bfloat16, (5,)), trainable=False)
    model.raw["bool"] = tf.Variable(rng.integers(0, 2, (4,)).astype(bool), trainable=False)
    model.empty = tf.Variable(np.zeros((0, 3), "float32"))
    optimizer = v1.train.AdamOptimizer(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model.w ** 2) + tf.cast(tf.reduce_sum(model.sub.k ** 3), tf.float32)
    optimizer.apply_gradients(zip(tape.gradient(loss, [model.w, model.sub.k]), [model.w, model.sub.k]))
    step = tf.Variable(7, dtype=tf.int64)
    prefix = tf.train.Checkpoint(model=model, opt=optimizer, step=step).save(
        str(tmp_path_factory.mktemp("v1adam") / "ckpt"))
    slots = {f"model/w{V}": {s: optimizer.get_slot(model.w, s).numpy() for s in ("m", "v")},
             f"model/sub/k{V}": {s: optimizer.get_slot(model.sub.k, s).numpy() for s in ("m", "v")}}
    return {"prefix": Path(prefix), "slots": slots}


@pytest.fixture(scope="module")
def keras3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc1"), keras.layers.Dense(2, name="fc2")])
    optimizer = keras.optimizers.Adam(0.01)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 4), "float32"), np.ones((4, 2), "float32"), verbose=0)
    prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path_factory.mktemp("k3") / "ckpt"))
    live = [(v.path, v.numpy(), optimizer._momentums[i].numpy(), optimizer._velocities[i].numpy())
            for i, v in enumerate(model.trainable_variables)]
    return {"prefix": Path(prefix), "live": live, "iterations": int(optimizer.iterations.numpy())}


@pytest.fixture(scope="module")
def bert_saver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF1 Saver checkpoint in the original BERT release's layout: ``adam_m``/``adam_v`` slots
    made as BERT's AdamWeightDecayOptimizer makes them, and TF1 Adam's ``Adam``/``Adam_1``."""
    directory = tmp_path_factory.mktemp("bert")
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("bert/encoder/layer_0/attention/self/query"):
            kernel = v1.get_variable("kernel", [4, 4])
            bias = v1.get_variable("bias", [4], initializer=v1.zeros_initializer())
        with v1.variable_scope("bert/embeddings"):
            v1.get_variable("word_embeddings", [10, 4], dtype=tf.float16)
            v1.get_variable("word_embeddings/adam_m", [10, 4], dtype=tf.float16, initializer=v1.ones_initializer())
            v1.get_variable("word_embeddings/adam_v", [10, 4], dtype=tf.float16)
        step = v1.train.get_or_create_global_step()
        loss = tf.reduce_sum(kernel * kernel) + tf.reduce_sum(bias)
        train = v1.train.AdamOptimizer(0.1).minimize(loss, global_step=step)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            session.run(train)
            prefix = v1.train.Saver().save(session, str(directory / "model.ckpt"), global_step=step)
    return Path(prefix)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    class Linear(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(np.arange(6, dtype="float32").reshape(3, 2))
            self.counts = [tf.Variable(5), tf.Variable(np.array([1, -2, 3], "int8"))]

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def __call__(self, x: Any) -> Any:
            return x @ self.w

    path = tmp_path_factory.mktemp("sm") / "linear"
    tf.saved_model.save(Linear(), str(path))
    return path


def _copy(src_dir: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(src_dir, tmp / src_dir.name))


def _booby_trap(path: Path) -> None:
    """Replace ``path`` with a FIFO: anything that opens it blocks forever."""
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _convert_within(seconds: float, *args: Any, **kwargs: Any) -> lamina.Artifact:
    """lamina.convert in a thread; a hang on a booby-trapped file fails the test instead of freezing it."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(_try(lambda: lamina.convert(*args, **kwargs))), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "conversion blocked: it opened a file it must never read"
    if isinstance(result[0], BaseException):
        raise result[0]
    return lamina.open(result[0])


def _try(call: Any) -> Any:
    try:
        return call()
    except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
        return exc


# ------------------------------------------------------------------------------------ TF2 object-based
def test_tf2_object_checkpoint_every_dtype_bitwise_and_slots_grouped(v1_adam: dict[str, Any], tmp_path: Path) -> None:
    prefix = v1_adam["prefix"]
    reader = tf.train.load_checkpoint(str(prefix))
    keys = sorted(reader.get_variable_to_shape_map())
    assert detect_source(prefix.parent) == "tf"
    art = lamina.open(lamina.convert(prefix.parent, tmp_path / "snap"))  # the directory: its latest checkpoint
    slot_keys = [k for k in keys if "/.OPTIMIZER_SLOT/" in k]
    globals_ = [f"opt/beta1_power{V}", f"opt/beta2_power{V}"]
    weights = [k for k in keys if k not in slot_keys + globals_ + [GRAPH]]
    assert art.keys() == weights and len(slot_keys) == 4
    assert f"model/raw/bfloat16{V}" in weights and f"model/empty{V}" in weights
    _all_bitwise(art, reader, weights)
    assert art.manifest.framework == {"name": "tensorflow", "version": tf.__version__}
    assert art.tensor(f"model/raw/bfloat16{V}", framework="np").dtype.name == "bfloat16"
    assert {t.name: t.layer for t in art.manifest.tensors}[f"model/sub/k{V}"] == "model/sub"

    opt = art.manifest.optimizer
    assert (opt.class_name, opt.framework, opt.slots) == ("unknown", "tensorflow", ("m", "v"))
    state = art.optimizer_state(framework="np")
    assert sorted(state) == sorted(v1_adam["slots"])
    for param, slots in v1_adam["slots"].items():  # the live optimizer's own slots, by parameter
        for slot, value in slots.items():
            _assert_bitwise(state[param][slot], value, f"{param}/{slot}")
    hyper = opt.param_groups[0].hyperparameters
    for name in ("beta1_power", "beta2_power"):
        stored = np.float32(reader.get_tensor(f"opt/{name}{V}"))
        assert (hyper[f"{name}_value"], hyper[f"{name}_dtype"]) == (float(stored), "F32")
    record = json.loads(art.read_file(tf_checkpoint.RECORD))
    assert record["slots"][f"model/w/.OPTIMIZER_SLOT/opt/m{V}"] == [f"model/w{V}", "m"]
    assert record["scalars"] == {f"opt/beta1_power{V}": "beta1_power", f"opt/beta2_power{V}": "beta2_power"}
    assert art.read_file(tf_checkpoint.GRAPH_FILE) == reader.get_tensor(GRAPH)


def test_include_optimizer_false_keeps_every_variable(v1_adam: dict[str, Any], tmp_path: Path) -> None:
    reader = tf.train.load_checkpoint(str(v1_adam["prefix"]))
    art = lamina.open(lamina.convert(v1_adam["prefix"], tmp_path / "snap", include_optimizer=False))
    keys = sorted(k for k in reader.get_variable_to_shape_map() if k != GRAPH)
    assert art.keys() == keys and art.manifest.optimizer is None
    _all_bitwise(art, reader, keys)


def test_variables_are_read_once_one_layer_at_a_time(v1_adam: dict[str, Any], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With one writer thread, the reads between two finished shards all belong to one layer:
    the conversion never holds more than a layer (and reads each variable exactly once)."""
    import lamina.snapshot.writer

    events: list[str | None] = []  # variable names read; None when a shard is done
    original = tf_checkpoint._Reader.get
    monkeypatch.setattr(tf_checkpoint._Reader, "get", lambda self, name: events.append(name) or original(self, name))
    monkeypatch.setattr(lamina.snapshot.writer, "default_workers", lambda: 1)
    art = tf_checkpoint.to_lamina(v1_adam["prefix"], tmp_path / "snap", progress=lambda done, total: events.append(None))
    reads = [e for e in events if e is not None and e != GRAPH]
    shapes = tf.train.load_checkpoint(str(v1_adam["prefix"])).get_variable_to_shape_map()
    assert sorted(reads) == sorted(k for k, s in shapes.items() if 0 not in s and k != GRAPH)  # empty: no bytes
    record = json.loads(art.read_file(tf_checkpoint.RECORD))
    owner = {**{k: v[0] for k, v in record["slots"].items()}, **{k: k for k in shapes}}  # slot -> its parameter
    batches: list[list[str]] = [[]]
    for event in events:
        if event is None:
            batches.append([])
        elif event != GRAPH and event not in record["scalars"]:  # the graph and scalars are read up front
            batches[-1].append(tf_checkpoint.layer_of(owner[event]))
    shards = [f for f in art.manifest.files if f.path.endswith(".safetensors")]
    assert len(batches) == len(shards) + 1 and batches[-1] == []
    assert all(len(set(batch)) <= 1 for batch in batches), batches


def test_keras3_checkpoint_slot_lists_grouped_like_the_live_optimizer(keras3: dict[str, Any], tmp_path: Path) -> None:
    reader = tf.train.load_checkpoint(str(keras3["prefix"]))
    art = lamina.open(lamina.convert(keras3["prefix"], tmp_path / "snap", from_format="tf"))
    params = [f"optimizer/_trainable_variables/{i}{V}" for i in range(len(keras3["live"]))]
    assert art.keys() == params + [f"save_counter{V}"]
    _all_bitwise(art, reader, art.keys())
    state = art.optimizer_state(framework="np")
    record = json.loads(art.read_file(tf_checkpoint.RECORD))
    for param, (path, value, momentum, velocity) in zip(params, keras3["live"]):
        assert record["full_names"][param] == path  # the Keras variable path, from the object graph
        _assert_bitwise(art.tensor(param, framework="np"), value, param)
        _assert_bitwise(state[param]["momentum"], momentum, param)
        _assert_bitwise(state[param]["velocity"], velocity, param)
    hyper = art.manifest.optimizer.param_groups[0].hyperparameters
    assert (hyper["_iterations_value"], hyper["_iterations_dtype"]) == (keras3["iterations"], "I64")
    assert hyper["_learning_rate_dtype"] == "F32"
    assert art.manifest.optimizer.slots == ("momentum", "velocity")


def test_keras_lists_that_shapes_do_not_prove_stay_tensors() -> None:
    def graph(slot_shape: tuple[int, ...]) -> tuple[list[Node], dict[str, tuple[int, ...]]]:
        nodes = [Node([(1, "optimizer")]),
                 Node([(2, "_trainable_variables"), (3, "_momentums"), (6, "_iterations")]),
                 Node([(4, "0")]), Node([(5, "0")]), Node([], "p", "seq/d/kernel"), Node([], "s", "adam/seq_d_kernel_m"),
                 Node([], "it", "adam/iteration")]
        return nodes, {"p": (2, 3), "s": slot_shape, "it": ()}

    notes: list[str] = []
    plan = plan_object_graph(*graph((2, 3)), notes)
    assert plan is not None and plan.slots == {"s": ("p", "m")} and plan.scalars == {"it": "_iterations"}
    assert plan_object_graph(*graph((3, 2)), notes) is None
    assert "does not match the trainable variables' shapes" in notes[-1]


def test_two_optimizers_are_not_merged() -> None:
    nodes = [Node([(1, "a"), (2, "o1"), (3, "o2")]), Node([], "a"), Node([], slot_variables=[(1, "m", 4)]),
             Node([], slot_variables=[(1, "m", 5)]), Node([], "a/m1"), Node([], "a/m2")]
    notes: list[str] = []
    assert plan_object_graph(nodes, {"a": (2,), "a/m1": (2,), "a/m2": (2,)}, notes) is None
    assert "2 optimizers" in notes[0]


# ------------------------------------------------------------------------------------ TF1 name-based
def test_tf1_saver_bert_layout_names_kept_slots_grouped(bert_saver: Path, tmp_path: Path) -> None:
    reader = tf.train.load_checkpoint(str(bert_saver))
    keys = sorted(reader.get_variable_to_shape_map())
    assert GRAPH not in keys and f"{bert_saver}.meta" in [str(p) for p in bert_saver.parent.iterdir()]
    art = lamina.open(lamina.convert(Path(f"{bert_saver}.index"), tmp_path / "snap"))
    params = ["bert/embeddings/word_embeddings", "bert/encoder/layer_0/attention/self/query/bias",
              "bert/encoder/layer_0/attention/self/query/kernel"]
    assert art.keys() == params + ["global_step"]  # global_step belongs to the loop: kept as a tensor
    _all_bitwise(art, reader, art.keys())
    state = art.optimizer_state(framework="np")
    assert sorted(state) == params
    assert sorted(state[params[0]]) == ["adam_m", "adam_v"] and sorted(state[params[2]]) == ["Adam", "Adam_1"]
    for param, slots in state.items():
        for slot, value in slots.items():  # the shard key <param>/<slot> is the checkpoint's own name
            _assert_bitwise(value, reader.get_tensor(f"{param}/{slot}"), f"{param}/{slot}")
    hyper = art.manifest.optimizer.param_groups[0].hyperparameters
    assert hyper["beta1_power_value"] == float(reader.get_tensor("beta1_power"))
    layers = {t.name: t.layer for t in art.manifest.tensors}
    assert layers[params[2]] == "bert/encoder/layer_0/attention/self/query"


def test_meta_graph_is_never_opened(bert_saver: Path, tmp_path: Path) -> None:
    directory = _copy(bert_saver.parent, tmp_path)
    _booby_trap(directory / f"{bert_saver.name}.meta")
    art = _convert_within(60, directory, tmp_path / "snap")  # the directory: through its 'checkpoint' file
    assert "bert/embeddings/word_embeddings" in art.keys()


def test_name_plan_needs_the_parameter_and_its_shape() -> None:
    plan = plan_by_names({"a/kernel": (2,), "a/kernel/Adam": (2,), "b/Adam": (3,), "c": (2,), "c/Momentum": (4,)})
    assert plan is not None and plan.slots == {"a/kernel/Adam": ("a/kernel", "Adam")}
    assert plan_by_names({"x": (2,), "x/Custom": (2,)}) is None


# ------------------------------------------------------------------------------------ other layouts
def test_saved_model_variables_without_reading_the_graph(saved_model: Path, tmp_path: Path) -> None:
    directory = _copy(saved_model, tmp_path)
    _booby_trap(directory / "saved_model.pb")  # never parsed: only its presence marks a SavedModel
    assert detect_source(directory) == "tf"
    art = _convert_within(60, directory, tmp_path / "snap")
    reader = tf.train.load_checkpoint(str(saved_model / "variables" / "variables"))
    assert art.keys() == [f"counts/0{V}", f"counts/1{V}", f"w{V}"]
    _all_bitwise(art, reader, art.keys())
    assert art.manifest.info.name == "linear"


def test_partitioned_variable_and_two_data_shards(tmp_path: Path) -> None:
    graph = tf.Graph()
    with graph.as_default():
        v1.get_variable("emb", [10, 3], partitioner=v1.fixed_size_partitioner(3))
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            (tmp_path / "part").mkdir()
            prefix = v1.train.Saver().save(session, str(tmp_path / "part" / "m"))
    art = lamina.open(lamina.convert(prefix, tmp_path / "snap", from_format="tf"))
    _all_bitwise(art, tf.train.load_checkpoint(prefix), ["emb"])
    sharded = copy_checkpoint(tmp_path)
    assert len(list(sharded.parent.glob("ckpt-1.data-*"))) == 2
    art = lamina.open(lamina.convert(sharded, tmp_path / "snap2"))
    _all_bitwise(art, tf.train.load_checkpoint(str(sharded)), art.keys())


def test_rewritten_index_is_one_tensorflow_accepts(tmp_path: Path) -> None:
    """The corpus's forged indexes are re-written with valid checksums: unchanged, TensorFlow and
    lamina read the result exactly like the original (so only lamina's checks refuse the forgeries)."""
    prefix = copy_checkpoint(tmp_path)
    rewrite_index(prefix, lambda name, entry: None)
    reader = tf.train.load_checkpoint(str(prefix))
    _assert_bitwise(reader.get_tensor(W), np.arange(600, dtype="float32").reshape(20, 30), W)
    art = lamina.open(lamina.convert(prefix, tmp_path / "snap"))
    _all_bitwise(art, reader, art.keys())


# ------------------------------------------------------------------------------------ detection, CLI
def test_detection_of_every_way_to_name_a_checkpoint(v1_adam: dict[str, Any], tmp_path: Path) -> None:
    prefix = v1_adam["prefix"]
    data = next(prefix.parent.glob(f"{prefix.name}.data-*"))
    for path in (prefix.parent, prefix, Path(f"{prefix}.index"), data):
        assert detect_source(path) == "tf", path
        assert tf_checkpoint.resolve_prefix(path) == prefix
    release = _copy(prefix.parent, tmp_path)  # the BERT release's folder: one checkpoint, no state file
    (release / "checkpoint").unlink()
    (release / "bert_config.json").write_text("{}")
    assert detect_source(release) == "tf" and tf_checkpoint.resolve_prefix(release) == release / prefix.name
    fake = tmp_path / "notes.index"
    fake.write_bytes(b"an index of my notes, not a table" * 4)
    with pytest.raises(lamina.FormatError, match="unrecognised format"):
        detect_source(fake)


def test_cli_convert_from_tf(v1_adam: dict[str, Any], tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(cli, ["convert", "--from", "tf", str(v1_adam["prefix"]), str(tmp_path / "a")])
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["convert", f"{v1_adam['prefix']}.index", str(tmp_path / "b")])  # detected
    assert done.exit_code == 0, done.output
    assert lamina.open(tmp_path / "a").keys() == lamina.open(tmp_path / "b").keys()
    assert lamina.open(tmp_path / "b").manifest.optimizer is not None
    with pytest.raises(lamina.FormatError, match="does not write them"):
        lamina.convert(tmp_path / "a", tmp_path / "c", to_format="tf")
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------------------------ refusals
def test_string_variable_refused_by_name(tmp_path: Path) -> None:
    prefix = copy_checkpoint(tmp_path, "saver")
    with pytest.raises(lamina.FormatError, match="'vocab' is a string tensor"):
        lamina.convert(prefix, tmp_path / "snap")
    assert not (tmp_path / "snap").exists()


def _shape_lie(name: str, entry: Any) -> None:
    if name == W:
        entry.shape.dim[0].size = 1 << 40


@pytest.mark.parametrize("damage, error, match", [
    ("oversized_shape", lamina.FormatError, r"'m/w/\.ATTRIBUTES/VARIABLE_VALUE' declares F32\[1099511627776, 30\]"),
    ("resource_dtype", lamina.FormatError, r"'m/w/\.ATTRIBUTES/VARIABLE_VALUE' is a resource tensor"),
    ("truncated_data", lamina.IntegrityError, r"needs bytes .* \(truncated\?\)"),
    ("missing_shard", lamina.NotFoundError, r"data shard 1 of 2"),
    ("garbage_index", lamina.FormatError, r"not a TensorFlow checkpoint index"),
    ("flipped_data_byte", lamina.IntegrityError, r"TensorFlow cannot read it .*(?i:checksum)"),
    ("stale_state_file", lamina.NotFoundError, r"names 'ckpt-9', which is not here"),
])
def test_damaged_checkpoints_get_typed_errors(damage: str, error: type, match: str, tmp_path: Path) -> None:
    prefix = copy_checkpoint(tmp_path)
    shard0, shard1 = (Path(f"{prefix}.data-0000{i}-of-00002") for i in (0, 1))
    src: Path = prefix
    if damage == "oversized_shape":
        rewrite_index(prefix, _shape_lie)
    elif damage == "resource_dtype":  # a resource handle has no value to read
        rewrite_index(prefix, lambda name, entry: setattr(entry, "dtype", 20) if name == W else None)
    elif damage == "truncated_data":
        shard1.write_bytes(shard1.read_bytes()[:-1])
    elif damage == "missing_shard":
        shard1.unlink()
    elif damage == "garbage_index":
        Path(f"{prefix}.index").write_bytes(os.urandom(300))
    elif damage == "flipped_data_byte":  # TensorFlow's own checksum finds it; lamina types the error
        raw = bytearray(shard0.read_bytes())
        raw[10] ^= 0xFF
        shard0.write_bytes(bytes(raw))
    elif damage == "stale_state_file":
        (prefix.parent / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/ckpt-9"\n')
        src = prefix.parent
    with pytest.raises(error, match=match):
        lamina.convert(src, tmp_path / "snap", from_format="tf")
    assert not (tmp_path / "snap").exists()


@pytest.mark.parametrize("module", ["lamina.converters.tf_checkpoint", "lamina.converters._tf_optim"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
