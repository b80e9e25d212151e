"""The Keras 3 framework adapter on the TensorFlow backend, in process: ``lamina.save`` of live
Sequential, functional and subclassed models, names and HDF5 layout equal to the ``.keras``
converter's, export to ``.keras`` from memory, ``load_into`` with its report and all-or-nothing
strictness, optimizer state by parameter for every supported optimizer, ``lamina.load``, and a
snapshot read back without TensorFlow. The torch backend runs the same checks in a subprocess
(``tests/keras_jobs/adapter_torch_job.py``), since Keras picks its backend once per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import keras  # noqa: E402  (a missing Keras or TensorFlow must fail the suite, never skip it)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lamina  # noqa: E402

HERE = Path(__file__).parent
RNG = np.random.RandomState(0)
X = RNG.rand(32, 6).astype("float32")
Y = RNG.rand(32, 2).astype("float32")


def _sequential() -> keras.Model:
    return keras.Sequential([keras.Input((6,)), keras.layers.Reshape((2, 3)), keras.layers.Conv1D(4, 2),
                             keras.layers.BatchNormalization(scale=False), keras.layers.Flatten(),
                             keras.layers.Dropout(0.2), keras.layers.Dense(2)])


def _functional() -> keras.Model:
    inputs = keras.Input((6,))
    x = keras.layers.Reshape((3, 2))(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True))(x)
    x = keras.layers.MultiHeadAttention(2, 3)(x, x)
    x = keras.layers.GRU(3)(x)
    x = keras.Sequential([keras.layers.Dense(4), keras.layers.LayerNormalization()])(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


@keras.saving.register_keras_serializable(package="lamina_tests")
class Tower(keras.Model):
    """A subclassed model: layers held in attributes, not in a ``layers`` list."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body = keras.layers.Dense(5, activation="relu")
        self.norm = keras.layers.LayerNormalization()
        self.head = keras.layers.Dense(2)

    def call(self, x: Any) -> Any:
        return self.head(self.norm(self.body(x)))


def _subclassed() -> keras.Model:
    model = Tower()
    model(X[:1])
    return model


MODELS: dict[str, Callable[[], keras.Model]] = {"sequential": _sequential, "functional": _functional,
                                                "subclassed": _subclassed}


def _digest(variables: list[Any]) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(v.numpy()).tobytes() for v in variables)).hexdigest()


def _trained(make: Callable[[], keras.Model], optimizer: keras.optimizers.Optimizer | None = None) -> keras.Model:
    keras.utils.set_random_seed(1)
    model = make()
    model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    return model


# ------------------------------------------------------------------------------ names and layout
@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_tensor_names_and_order_equal_the_keras_converter(tmp_path: Path, kind: str) -> None:
    model = MODELS[kind]()
    model.save(tmp_path / "m.keras")
    converted = lamina.open(lamina.convert(tmp_path / "m.keras", tmp_path / "converted"))
    saved = lamina.save(model, tmp_path / "memory")
    assert saved.keys() == converted.keys()
    assert saved.layers == converted.layers
    assert len(saved.keys()) == len(model.weights)
    for name in saved.keys():
        assert saved.tensor(name, framework="np").tobytes() == converted.tensor(name, framework="np").tobytes()


def test_subclassed_model_has_real_names_and_the_converters_layer_layout(tmp_path: Path) -> None:
    model = _subclassed()
    model.save(tmp_path / "m.keras")
    converted = lamina.open(lamina.convert(tmp_path / "m.keras", tmp_path / "converted"))
    saved = lamina.save(model, tmp_path / "memory")
    # a .keras file records no variable names for attribute-held layers: the converter numbers them
    assert sorted(saved.layers) == sorted(converted.layers)
    head = next(layer for layer in saved.layers if saved.layer(layer, framework="np").keys()
                and layer == model.head.name)
    assert sorted(saved.layer(head, framework="np")) == [f"{head}/bias", f"{head}/kernel"]
    assert sorted(converted.layer(head, framework="np")) == [f"{head}/0", f"{head}/1"]
    # both load into a fresh instance: matching goes through Keras's own save paths
    for art in (saved, converted):
        fresh = Tower()
        fresh(X[:1])
        assert lamina.load(fresh, art).ok
        assert _digest(fresh.weights) == _digest(model.weights)


@pytest.mark.parametrize("policy", ["float32", "bfloat16"])
def test_layout_json_equals_the_converters_layout(tmp_path: Path, policy: str) -> None:
    keras.config.set_dtype_policy(policy)
    try:
        model = _sequential()
    finally:
        keras.config.set_dtype_policy("float32")
    model.save(tmp_path / "m.keras")
    converted = lamina.open(lamina.convert(tmp_path / "m.keras", tmp_path / "converted"))
    saved = lamina.save(model, tmp_path / "memory")
    ours, theirs = (json.loads(a.read_file("keras/layout.json")) for a in (saved, converted))
    assert {g["path"]: g["attrs"] for g in ours["groups"]} == {g["path"]: g["attrs"] for g in theirs["groups"]}
    assert sorted(ours["datasets"], key=lambda d: d["path"]) == sorted(theirs["datasets"], key=lambda d: d["path"])
    assert saved.manifest.tensors[0].dtype == ("BF16" if policy == "bfloat16" else "F32")


def test_unbuilt_model_is_a_clear_error(tmp_path: Path) -> None:
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(lamina.FormatError, match="not built.*keras.Input"):
        lamina.save(model, tmp_path / "snap")
    assert not (tmp_path / "snap").exists()


def test_two_layers_with_one_name_are_refused(tmp_path: Path) -> None:
    class Twins(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.a = keras.layers.Dense(2, name="twin")
            self.b = keras.layers.Dense(2, name="twin")

        def call(self, x: Any) -> Any:
            return self.b(self.a(x))

    model = Twins()
    model(X[:1])
    with pytest.raises(lamina.FormatError, match="'twin/kernel'.*distinct names"):
        lamina.save(model, tmp_path / "snap")


def test_user_files_cannot_replace_the_keras_description(tmp_path: Path) -> None:
    with pytest.raises(lamina.FormatError, match="keras/config.json"):
        lamina.save(_sequential(), tmp_path / "snap", files={"keras/config.json": b"{}"})


# ------------------------------------------------------------------------------ export to .keras
@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_snapshot_saved_from_memory_exports_to_keras_and_predicts_bitwise(tmp_path: Path, kind: str) -> None:
    model = _trained(MODELS[kind])
    art = lamina.save(model, tmp_path / "snap", optimizer=model.optimizer, info={"name": kind})
    exported = lamina.convert(art.location, tmp_path / "m.keras")
    loaded = keras.models.load_model(exported)  # safe mode on
    assert np.array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    assert _digest(loaded.weights) == _digest(model.weights)
    assert _digest(loaded.optimizer.variables) == _digest(model.optimizer.variables)
    assert int(loaded.optimizer.iterations.numpy()) == 4


# ------------------------------------------------------------------------------ loading in place
def test_load_into_fills_a_fresh_model_and_reports(tmp_path: Path) -> None:
    model = _trained(_functional)
    art = lamina.save(model, tmp_path / "snap")
    fresh = _functional()  # other auto-generated layer names: matched through Keras's save paths
    assert [v.name for v in fresh.weights] == [v.name for v in model.weights]
    report = art.load_into(fresh)
    assert report.ok and len(report.loaded) == len(model.weights)
    assert np.array_equal(fresh.predict(X, verbose=0), model.predict(X, verbose=0))


def test_strict_load_changes_nothing_and_reports_every_difference(tmp_path: Path) -> None:
    source = {"dense/kernel": np.ones((6, 3), "float32"), "dense/bias": np.ones(4, "float16"),
              "extra/w": np.ones(1, "float32")}
    art = lamina.save(source, tmp_path / "snap", layer_of=lambda n: n.rpartition("/")[0])
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="dense"),
                              keras.layers.Dense(1, name="out")])
    before = _digest(model.weights)
    with pytest.raises(lamina.StateMismatchError, match="nothing was loaded") as info:
        art.load_into(model)
    report = info.value.report
    assert report.missing == ["out/kernel", "out/bias"]
    assert report.unexpected == ["extra/w"]
    assert sorted(m.name for m in report.mismatched) == ["dense/bias", "dense/kernel"]
    assert "snapshot F32[6, 3] vs module F32[6, 4]" in str(report)
    assert _digest(model.weights) == before
    # non-strict: what matches is loaded, the rest reported
    ok = lamina.save({"dense/kernel": np.full((6, 4), 3, "float32")}, tmp_path / "partial",
                     layer_of=lambda n: n.rpartition("/")[0])
    report = ok.load_into(model, strict=False)
    assert report.loaded == ["dense/kernel"] and "dense/bias" in report.missing
    assert np.all(model.get_layer("dense").kernel.numpy() == 3)


def test_a_damaged_shard_is_found_before_any_variable_changes(tmp_path: Path) -> None:
    model = _trained(_sequential)
    art = lamina.save(model, tmp_path / "snap")
    last = art.manifest.tensors[-1].file
    (tmp_path / "snap" / last).write_bytes((tmp_path / "snap" / last).read_bytes()[:-3])
    fresh = _sequential()
    before = _digest(fresh.weights)
    with pytest.raises(lamina.IntegrityError, match=last):
        lamina.open(tmp_path / "snap").load_into(fresh)
    assert _digest(fresh.weights) == before


# ------------------------------------------------------------------------------ optimizer state
OPTIMIZERS: dict[str, Callable[[], keras.optimizers.Optimizer]] = {
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "amsgrad": lambda: keras.optimizers.Adam(1e-2, amsgrad=True),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.01),
    "sgd_momentum": lambda: keras.optimizers.SGD(1e-2, momentum=0.9, nesterov=True),
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-3, momentum=0.5, centered=True),
    "schedule": lambda: keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.9)),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_state_round_trips_by_parameter_and_equals_the_converters(tmp_path: Path, name: str) -> None:
    model = _trained(_sequential, OPTIMIZERS[name]())
    art = lamina.save(model, tmp_path / "snap", optimizer=model.optimizer)
    assert art.optimizer.framework == "keras"
    assert art.optimizer.class_name == f"keras.optimizers.{type(model.optimizer).__name__}"
    trainable = {v.path for v in model.trainable_variables}
    assert len(art.optimizer.param_groups[0].params) == len(trainable)
    # the converter of model.save() regroups the same state under the same names
    model.save(tmp_path / "m.keras")
    converted = lamina.open(lamina.convert(tmp_path / "m.keras", tmp_path / "converted"))
    ours, theirs = art.optimizer_state("np"), converted.optimizer_state("np")
    assert sorted(ours) == sorted(theirs)
    for param in ours:
        assert sorted(ours[param]) == sorted(theirs[param])
        for slot in ours[param]:
            assert ours[param][slot].tobytes() == theirs[param][slot].tobytes()
    # restore into a fresh, not yet built optimizer
    keras.utils.set_random_seed(1)
    fresh = _sequential()
    fresh.compile(optimizer=OPTIMIZERS[name](), loss="mse")
    assert not fresh.optimizer.built
    art.load_into(fresh)
    art.load_optimizer(fresh.optimizer, fresh)
    assert int(fresh.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 4
    assert _digest(fresh.optimizer.variables) == _digest(model.optimizer.variables)


def test_lamina_load_restores_weights_and_the_compiled_optimizer_in_one_call(tmp_path: Path) -> None:
    model = _trained(_sequential)
    lamina.save(model, tmp_path / "snap", optimizer=model.optimizer)
    fresh = _sequential()
    fresh.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    report = lamina.load(fresh, tmp_path / "snap")
    assert report.ok
    assert _digest(fresh.weights) == _digest(model.weights)
    assert _digest(fresh.optimizer.variables) == _digest(model.optimizer.variables)
    # an uncompiled model gets its weights only; an explicit optimizer without saved state is refused
    bare = _sequential()
    assert lamina.load(bare, tmp_path / "snap").ok and getattr(bare, "optimizer", None) is None
    lamina.save(model, tmp_path / "weights-only")
    with pytest.raises(lamina.StateMismatchError, match="no optimizer state"):
        lamina.load(_sequential(), tmp_path / "weights-only", optimizer=keras.optimizers.Adam())


def test_a_frozen_layer_makes_the_parameter_sets_differ(tmp_path: Path) -> None:
    model = _trained(_sequential)
    art = lamina.save(model, tmp_path / "snap", optimizer=model.optimizer)
    fresh = _sequential()
    fresh.layers[-1].trainable = False
    fresh.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    with pytest.raises(lamina.StateMismatchError, match="not in the optimizer.*dense"):
        art.load_optimizer(fresh.optimizer, fresh)


def test_a_different_optimizer_class_is_refused_before_anything_changes(tmp_path: Path) -> None:
    model = _trained(_sequential, keras.optimizers.SGD(1e-2, momentum=0.9))
    art = lamina.save(model, tmp_path / "snap", optimizer=model.optimizer)
    fresh = _sequential()
    fresh.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    fresh.optimizer.build(fresh.trainable_variables)
    before = _digest(fresh.optimizer.variables)
    with pytest.raises(lamina.StateMismatchError, match="no 'momentum' state|no 'velocity' state"):
        art.load_optimizer(fresh.optimizer, fresh)
    assert _digest(fresh.optimizer.variables) == before


def test_loss_scale_optimizer_is_refused_with_a_reason(tmp_path: Path) -> None:
    model = _sequential()
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    with pytest.raises(lamina.FormatError, match="LossScaleOptimizer"):
        lamina.save(model, tmp_path / "snap", optimizer=optimizer)


def test_compiled_but_untrained_keras_archive_converts_with_its_optimizer(tmp_path: Path) -> None:
    model = _sequential()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.save(tmp_path / "m.keras")
    art = lamina.open(lamina.convert(tmp_path / "m.keras", tmp_path / "snap"))
    assert art.optimizer is not None and art.optimizer.state == ()
    loaded = keras.models.load_model(lamina.convert(art.location, tmp_path / "back.keras"))
    assert np.array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))


# ------------------------------------------------------------------------------ without TensorFlow
def test_a_keras_snapshot_reads_with_numpy_where_tensorflow_and_keras_cannot_be_imported(tmp_path: Path) -> None:
    model = _trained(_functional)
    lamina.save(model, tmp_path / "snap", optimizer=model.optimizer)
    expected = {v.path: np.ascontiguousarray(v.numpy()).tobytes() for v in model.weights}
    names = dict(zip([v.path for v in model.weights], lamina.open(tmp_path / "snap").keys()))
    (tmp_path / "expected.json").write_text(json.dumps({names[p]: hashlib.sha256(b).hexdigest()
                                                        for p, b in expected.items()}))
    code = (
        "import sys, json, hashlib\n"
        "for m in ('tensorflow', 'keras', 'torch', 'jax'): sys.modules[m] = None  # importing them fails\n"
        "import lamina\n"
        f"state = lamina.open({str(tmp_path / 'snap')!r}).state_dict(framework='np')\n"
        f"want = json.load(open({str(tmp_path / 'expected.json')!r}))\n"
        "got = {n: hashlib.sha256(a.tobytes()).hexdigest() for n, a in state.items()}\n"
        "assert got == want, (sorted(got), sorted(want))\n"
        "print('ok', len(got))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", str(len(model.weights))]


# ------------------------------------------------------------------------------ the torch backend
def test_the_torch_backend_saves_loads_exports_and_reads_tensorflow_snapshots(tmp_path: Path) -> None:
    """One subprocess with KERAS_BACKEND=torch runs the same checks, and loads a snapshot (weights and
    optimizer, int64 iteration on TensorFlow -> int32 on torch) that this TensorFlow process saved."""
    model = _trained(_sequential)
    lamina.save(model, tmp_path / "from-tf", optimizer=model.optimizer)
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    job = HERE / "keras_jobs" / "adapter_torch_job.py"
    done = subprocess.run([sys.executable, str(job), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "torch"
    assert result["names_equal_converter"] and result["layout_equal_converter"]
    assert result["export_predicts_bitwise"] and result["optimizer_round_trip"]
    assert result["strict_refused_and_unchanged"]
    assert result["tf_snapshot_weights"] == _digest(model.weights)
    assert result["tf_snapshot_iteration"] == int(model.optimizer.iterations.numpy())
    assert result["tf_snapshot_optimizer"] == _digest(model.optimizer.variables[1:])  # all but the iteration
