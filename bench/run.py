"""lamina performance benchmark: save, save memory, full load, one-layer load.

    python bench/run.py                 # full run (0.74 GB model + a 4x 2.9 GB one): ~5 min on 2 cores, ~6 GB disk at peak
    python bench/run.py --scale 0.1     # quick smoke run (fewer blocks, smaller vocabulary)
    python bench/run.py --out DIR       # where data goes (default: a temp dir under bench/_data)
    python bench/run.py --model gpt2    # the same measurements on transformers' GPT-2 small (random init)

Compares ``lamina.save`` / ``lamina.open(...).load_into`` / ``lamina.open(...).layer`` against
``safetensors.torch`` (one file) and ``torch.save`` / ``torch.load`` on a generated bf16
transformer-like state dict, prints a table with ratios and whether each target is met, and writes
results.json and results.md into the output directory. Big files are removed at the end (unless
``--keep``). See docs/performance.md for the method and the numbers of a reference run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _investigate as inv  # noqa: E402
import safetensors  # noqa: E402
import safetensors.torch  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    GPT2_MID_LAYER,
    MID_LAYER,
    Config,
    GPT2Spec,
    build_module,
    fsync_path,
    gpt2_model,
    gpt2_module,
    layer_bytes,
    make_state_dict,
    median,
    page_cache_ballast,
    pressure,
    read_all,
    rm,
    timed,
    timed_cpu,
    total_bytes,
    unique_tensors,
)

import lamina  # noqa: E402

MB = 1e6
GB = 1e9
MEM_SLACK = 64 * 2**20  # the save-memory target: largest layer + 64 MiB
BALLAST = 0  # bytes of page-cache ballast before each timed write; set in main()


@dataclass
class Workload:
    """What a run measures: the synthetic bf16 transformer, or a ``transformers`` GPT-2.

    The method names in the tables stay the same for both; for GPT-2 the safetensors anchors are its
    documented calls for models with tied weights (``save_file`` refuses tensors that share memory):
    "safetensors save_file" is ``safetensors.torch.save_model(model, f)`` (which stores one name of
    each tied group, then calls ``save_file``) and the safetensors load is
    ``safetensors.torch.load_model(module, f)`` (``load_file``, then ``load_state_dict(strict=False)``
    and a check that only tied names were missing).
    """

    name: str
    desc: str  # one line for the report
    mid_layer: str
    subject: Any  # what every save method is given: a state dict, or the model
    sd: dict[str, torch.Tensor]  # every name of the module, tied names included (values are checked)
    unique: dict[str, torch.Tensor]  # one name per stored tensor (bytes, layers, the save breakdown)
    make_module: Callable[[], torch.nn.Module]  # the resident, zeroed load target
    st_save: Callable[[Any, Path], None]
    st_load: Callable[[torch.nn.Module, Path], Any]
    cfg: Config | None = None  # the synthetic model's config (the memory subprocesses build only that one)


def synthetic_workload(cfg: Config, seed: int = 0) -> Workload:
    sd = make_state_dict(cfg, seed)
    return Workload(
        "synthetic", f"d_model={cfg.d_model}, {cfg.n_blocks} blocks, vocab {cfg.vocab}, bf16", MID_LAYER, sd, sd, sd,
        lambda: build_module(cfg), lambda sd, p: safetensors.torch.save_file(sd, p),
        lambda m, p: m.load_state_dict(safetensors.torch.load_file(p)), cfg)


def gpt2_workload(spec: GPT2Spec, seed: int | None = 0) -> Workload:
    model = gpt2_model(spec, seed)
    sd = model.state_dict()
    how = "transformers random init" if seed is not None else "randn bit patterns, no init"
    return Workload(
        "gpt2", f"transformers GPT2LMHeadModel, {spec.n_layer} layers, d=768, vocab {spec.vocab}, {spec.dtype} "
        f"({how}; lm_head.weight tied to transformer.wte.weight)", GPT2_MID_LAYER, model, sd, unique_tensors(sd),
        lambda: gpt2_module(spec), lambda m, p: safetensors.torch.save_model(m, str(p)),
        lambda m, p: safetensors.torch.load_model(m, str(p)))


class _StoredOnly:
    """A module seen through the names lamina stored (not its aliases: GPT-2's tie), so the load
    floor reads each stored tensor once, into the module memory both tied names share."""

    def __init__(self, module: torch.nn.Module, path: Path) -> None:
        self.module = module
        self.names = {t.name for t in lamina.open(path).manifest.tensors}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t for n, t in self.module.state_dict().items() if n in self.names}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next(int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem / 2**30, 1), "kernel": platform.release(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "safetensors": safetensors.__version__, "lamina": lamina.__version__,
    }


def fmt_range(xs: list[float]) -> str:
    return f"{median(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"


# ----------------------------------------------------------------------------------- save
def run_rounds(methods: dict, reps: int, label: str, warmup: bool = True) -> dict[str, dict[str, list[float]]]:
    """Time ``methods`` ({name: (path, fn(path))}) round-robin, shuffled order each round, after one
    untimed warm-up round (when ``warmup``). Before every timed call that writes (path not None):
    the method's previous output is deleted, a page-cache ballast of ``BALLAST`` bytes is written and
    deleted (see ``page_cache_ballast``), then ``os.sync()`` runs, so no dirty pages of an earlier
    call are being written back meanwhile and every method writes into recycled page cache. The
    outputs of the last round are left in place."""
    res: dict[str, dict[str, list[float]]] = {m: {"wall": [], "cpu": []} for m in methods}
    rng = random.Random(label)
    for rep in range(reps + (1 if warmup else 0)):
        counted = rep or not warmup
        order = list(methods)
        rng.shuffle(order)
        for name in order:
            path, fn = methods[name]
            if path is not None:
                rm(path)
                if BALLAST:
                    page_cache_ballast(path.parent / ".ballast", BALLAST)
            os.sync()
            wall, cpu = timed_cpu(lambda: fn(path))
            if counted:
                res[name]["wall"].append(wall)
                res[name]["cpu"].append(cpu)
        if counted:
            log(f"  {label} round {rep if warmup else rep + 1}/{reps}: "
                + ", ".join(f"{n}={res[n]['wall'][-1]:.2f}s" for n in order))
    os.sync()
    return res


def bench_save(w: Workload, out: Path, reps: int) -> dict[str, dict[str, list[float]]]:
    subject = w.subject

    def st_fsync(p: Path) -> None:
        w.st_save(subject, p)
        fsync_path(p)
        fsync_path(p.parent)

    methods = {
        "lamina.save durable=True": (out / "lamina_durable", lambda p: lamina.save(subject, p, durable=True)),
        "lamina.save durable=False": (out / "lamina_fast", lambda p: lamina.save(subject, p, durable=False)),
        "safetensors save_file": (out / "st.safetensors", lambda p: w.st_save(subject, p)),
        "safetensors save_file + fsync": (out / "st_fsync.safetensors", st_fsync),
        "torch.save": (out / "model.pt", lambda p: torch.save(w.sd, p)),  # torch stores shared memory once
    }
    return run_rounds(methods, reps, "save")


def save_breakdown(sd: dict, out: Path, reps: int) -> dict[str, dict[str, list[float]]]:
    """Where lamina.save time goes: lamina with sha256 stubbed out, and its parts done by hand on
    the same bytes (per-layer files with no / per-file / deferred fsync; sha256 alone)."""
    groups = inv.group_layers(sd)
    out.mkdir(exist_ok=True)
    methods = {
        "lamina.save durable=False, sha256 stubbed": (out / "nohash_fast", lambda p: inv.lamina_save_nohash(sd, p, False)),
        "lamina.save durable=True, sha256 stubbed": (out / "nohash_durable", lambda p: inv.lamina_save_nohash(sd, p, True)),
        "per-layer files, plain write, no fsync": (out / "w_none", lambda p: inv.write_layers(groups, p, "none")),
        "per-layer files, fsync after each file": (out / "w_each", lambda p: inv.write_layers(groups, p, "each")),
        "per-layer files, sync_file_range each + fsync all at end":
            (out / "w_deferred", lambda p: inv.write_layers(groups, p, "deferred")),
        "sha256 of every byte, 1 thread (no I/O)": (None, lambda p: inv.sha256_layers(groups, 1)),
        "sha256 of every byte, 2 threads across layers (no I/O)": (None, lambda p: inv.sha256_layers(groups, 2)),
    }
    res = run_rounds(methods, reps, "breakdown", warmup=False)
    rm(out)
    os.sync()
    return res


# ----------------------------------------------------------------------------------- memory
def mem_worker(kind: str, method: str, path: Path, cfg: Config) -> dict:
    cmd = [sys.executable, str(HERE / "_memworker.py"), kind, method, str(path), *cfg.args()]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- load
LOAD_LAMINA = "lamina open().load_into(module)"
LOAD_ST = "module.load_state_dict(safetensors load_file)"
LOAD_TORCH = "module.load_state_dict(torch.load weights_only)"
RAW_SERIAL = "(floor) plain readinto of lamina shards, 1 thread"
RAW_THREADED = "(floor) plain readinto of lamina shards, 2 threads"


def bench_load(paths: dict[str, Path], w: Workload, reps: int, investigate: bool) -> dict[str, list[float]]:
    """Warm page cache (every file read once, plus an untimed warm-up call per method), one resident
    module reused by every method, shuffled round-robin, median."""
    module = w.make_module()
    sd = w.sd
    methods = {
        LOAD_LAMINA: lambda: lamina.open(paths["lamina"]).load_into(module),
        LOAD_ST: lambda: w.st_load(module, paths["safetensors"]),
        LOAD_TORCH: lambda: module.load_state_dict(torch.load(paths["torch"], weights_only=True)),
    }
    raw = None
    if investigate:
        raw = inv.RawReader(paths["lamina"], _StoredOnly(module, paths["lamina"]))  # type: ignore[arg-type]
        methods[RAW_SERIAL] = raw.serial
        methods[RAW_THREADED] = raw.threaded
    for p in paths.values():
        read_all(p)
    for name, fn in methods.items():  # untimed warm-up, also checks the loaded values
        with torch.no_grad():
            for p in module.state_dict().values():
                p.zero_()
        fn()
        bad = [n for n, t in module.state_dict().items()
               if not torch.equal(t.view(torch.uint8), sd[n].view(torch.uint8))]
        if bad:
            raise AssertionError(f"{name}: wrong values after load in {bad[:3]}")
    times: dict[str, list[float]] = {m: [] for m in methods}
    rng = random.Random(1)
    for _ in range(reps):
        order = list(methods)
        rng.shuffle(order)
        for name in order:
            times[name].append(timed(methods[name]))
    if raw is not None:
        raw.close()
    return times  # the module and its 0.74 GB are freed with this frame


def bench_one_layer(path: Path, ref: dict, reps: int, layer: str) -> dict[str, list[float]]:
    """open() + layer(layer), warm cache; also the two parts separately."""
    got = lamina.open(path).layer(layer)
    assert got.keys() == ref.keys()
    for n, t in got.items():
        assert torch.equal(t.view(torch.uint8), ref[n].view(torch.uint8)), n
    res: dict[str, list[float]] = {"total": [], "open": [], "layer": []}
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        art = lamina.open(path)
        t1 = time.perf_counter()
        art.layer(layer)
        t2 = time.perf_counter()
        res["total"].append(t2 - t0)
        res["open"].append(t1 - t0)
        res["layer"].append(t2 - t1)
    return res


def bench_st_layer(path: Path, names: list[str], reps: int) -> list[float]:
    """Context: the same tensors from one safetensors file (safe_open parses the whole header)."""
    def fn() -> None:
        with safetensors.safe_open(path, framework="pt") as f:
            for n in names:
                f.get_tensor(n).clone()  # own the bytes, as lamina's result does
    fn()
    return [timed(fn) for _ in range(reps)]


# ----------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="shrink the model: multiplies the block count (min 8) and vocabulary (default 1.0)")
    ap.add_argument("--out", type=Path, default=None, help="data directory (default: temp dir under bench/_data)")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions for save/load (default 7)")
    ap.add_argument("--no-ballast", action="store_true",
                    help="skip the page-cache ballast before each timed write (faster, much noisier on a VM)")
    ap.add_argument("--layer-reps", type=int, default=30, help="repetitions for the one-layer load (default 30)")
    ap.add_argument("--no-mem", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--no-4x", action="store_true", help="skip the 4x model")
    ap.add_argument("--no-investigate", action="store_true", help="skip the timing splits (save breakdown, load floor)")
    ap.add_argument("--keep", action="store_true", help="keep the written snapshots and files")
    ap.add_argument("--model", choices=["synthetic", "gpt2"], default="synthetic",
                    help="synthetic: the generated bf16 transformer (default). gpt2: transformers' "
                         "GPT2LMHeadModel(GPT2Config()), GPT-2 small (124.4M parameters, 148 stored tensors), random "
                         "init (seed 0); its 4x model has 48 layers and a 4x vocabulary (3.99x the parameters, filled "
                         "with randn bit patterns instead of init). lm_head.weight is tied to transformer.wte.weight: "
                         "lamina stores it once (an alias), and the safetensors anchors are save_model / load_model, "
                         "its documented calls for shared tensors (save_file refuses them). --scale does not apply; "
                         "the memory probes (bench/_memworker.py) measure the synthetic model only and are skipped")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                    help="--model gpt2 only: f32 (default) keeps the dtype GPT-2 is initialised in and published in "
                         "(0.498 GB, comparable in bytes to the synthetic 0.735 GB); bf16 halves the bytes (0.249 GB) "
                         "at the same tensor count, to see the per-tensor costs weigh more. No method casts, so only "
                         "the byte count differs")
    args = ap.parse_args()
    investigate = not args.no_investigate
    global BALLAST

    t_start = time.perf_counter()
    if args.out is None:
        (HERE / "_data").mkdir(exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="run-", dir=HERE / "_data"))
    else:
        out = args.out.resolve()
        out.mkdir(parents=True, exist_ok=True)
    cfg1 = Config().scaled(args.scale, args.scale)
    cfg4 = Config(cfg1.d_model, cfg1.n_blocks * 4, cfg1.vocab * 4)
    spec1 = GPT2Spec(dtype=args.dtype)
    gpt2 = args.model == "gpt2"
    info = machine()
    log(f"machine: {info}")
    log(f"output: {out}")

    results: dict = {"machine": info, "model": args.model, "reps": args.reps, "pressure_start": pressure()}
    if gpt2:
        results.update(config_1x=spec1.as_dict(), config_4x=spec1.scaled4().as_dict())
    else:
        results.update(config_1x=cfg1.as_dict(), config_4x=cfg4.as_dict())
    big: list[Path] = []
    try:
        log(f"generating the 1x model: {spec1 if gpt2 else cfg1}")
        w = gpt2_workload(spec1) if gpt2 else synthetic_workload(cfg1)
        sd = w.unique
        nbytes = total_bytes(sd)
        lb = layer_bytes(sd)
        largest = max(lb, key=lb.get)
        results["mid_layer"] = w.mid_layer
        results["model_1x"] = {"desc": w.desc, "bytes": nbytes, "tensors": len(sd), "names": len(w.sd),
                               "layers": len(lb), "largest_layer": largest, "largest_layer_bytes": lb[largest],
                               "mid_layer_bytes": lb[w.mid_layer]}
        BALLAST = 0 if args.no_ballast else int(nbytes * 1.1) + (64 << 20)
        results["ballast_bytes"] = BALLAST
        log(f"1x: {w.desc}: {nbytes / GB:.3f} GB, {len(sd)} stored tensors ({len(w.sd)} names), {len(lb)} layers, "
            f"largest layer {largest} {lb[largest] / MB:.1f} MB")

        # ---------------- save time
        save_dir = out / "save"
        save_dir.mkdir(exist_ok=True)
        big.append(save_dir)
        log(f"save: 1 warm-up + {args.reps} timed rounds, 5 methods")
        results["save"] = bench_save(w, save_dir, args.reps)
        if investigate:
            log("save breakdown (lamina with sha256 stubbed; its parts by hand)")
            big.append(out / "save_breakdown")
            results["save_breakdown"] = save_breakdown(sd, out / "save_breakdown", max(3, args.reps // 2 + 1))

        paths = {"lamina": save_dir / "lamina_durable", "safetensors": save_dir / "st.safetensors",
                 "torch": save_dir / "model.pt"}
        results["file_bytes"] = {k: (sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir()
                                     else p.stat().st_size) for k, p in paths.items()}

        # ---------------- memory (fresh subprocess per method)
        if gpt2 and not args.no_mem:
            log("memory probes: skipped for --model gpt2 (bench/_memworker.py builds the synthetic model only)")
        if not args.no_mem and w.cfg is not None:
            mem_dir = out / "mem"
            mem_dir.mkdir(exist_ok=True)
            big.append(mem_dir)
            mem: dict[str, dict] = {}
            for method, target in [("lamina_durable", "lam_d"), ("lamina_nondurable", "lam_f"),
                                   ("safetensors", "st.safetensors"), ("torch", "model.pt")]:
                os.sync()
                mem["save " + method] = mem_worker("save", method, mem_dir / target, cfg1)
                log(f"  save mem {method}: +{mem['save ' + method]['extra'] / MB:.1f} MB")
                rm(mem_dir / target)
            for method in ("lamina", "safetensors", "torch"):
                read_all(paths[method])
                mem["load " + method] = mem_worker("load", method, paths[method], cfg1)
                log(f"  load mem {method}: +{mem['load ' + method]['extra'] / MB:.1f} MB")
            results["mem"] = mem

        # ---------------- full load
        log(f"load into module: warm cache, {args.reps} timed rounds")
        results["load_s"] = bench_load(paths, w, args.reps, investigate)

        # ---------------- one layer at 1x; torch.load of the whole file
        layer_names = [n for n in sd if n.rpartition(".")[0] == w.mid_layer]
        ref = {n: sd[n].clone() for n in layer_names}
        log("one-layer load 1x")
        results["layer_1x_s"] = bench_one_layer(paths["lamina"], ref, args.layer_reps, w.mid_layer)
        results["st_layer_1x_s"] = bench_st_layer(paths["safetensors"], layer_names, args.layer_reps)
        if investigate:
            results["open_split_1x"] = inv.manifest_decode_split(paths["lamina"])
        log("torch.load whole 1x file (warm)")
        del sd, w
        gc.collect()
        torch.load(paths["torch"], weights_only=True)
        results["torch_load_1x_s"] = [timed(lambda: torch.load(paths["torch"], weights_only=True))
                                      for _ in range(max(3, (args.reps + 1) // 2))]

        # ---------------- 4x
        if not args.no_4x:
            rm(save_dir)  # free page cache for the bigger model
            os.sync()
            log(f"generating the 4x model: {spec1.scaled4() if gpt2 else cfg4}")
            sd4 = (unique_tensors(gpt2_model(spec1.scaled4(), seed=None).state_dict()) if gpt2
                   else make_state_dict(cfg4, seed=4))
            lb4 = layer_bytes(sd4)
            results["model_4x"] = {"bytes": total_bytes(sd4), "tensors": len(sd4), "layers": len(lb4)}
            log(f"4x: {total_bytes(sd4) / GB:.3f} GB, {len(sd4)} tensors, {len(lb4)} layers; saving")
            x4 = out / "x4"
            x4.mkdir(exist_ok=True)
            big.append(x4)
            lamina.save(sd4, x4 / "lamina", durable=False)
            safetensors.torch.save_file(sd4, x4 / "st.safetensors")
            ref4 = {n: sd4[n].clone() for n in layer_names}
            del sd4
            gc.collect()
            os.sync()
            log("one-layer load 4x")
            results["layer_4x_s"] = bench_one_layer(x4 / "lamina", ref4, args.layer_reps, results["mid_layer"])
            results["st_layer_4x_s"] = bench_st_layer(x4 / "st.safetensors", layer_names, args.layer_reps)
            if investigate:
                results["open_split_4x"] = inv.manifest_decode_split(x4 / "lamina")
    finally:
        if not args.keep:
            for p in big:
                rm(p)
    results["pressure_end"] = pressure()
    results["wall_s"] = time.perf_counter() - t_start
    table = report(results)
    print()
    print(table)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(table + "\n")
    log(f"done in {results['wall_s']:.0f} s; results in {out / 'results.json'} and results.md"
        + ("" if args.keep else " (big files removed)"))


# ----------------------------------------------------------------------------------- report
def report(r: dict) -> str:
    m1 = r["model_1x"]
    nbytes = m1["bytes"]
    lines: list[str] = []

    def ok(b: bool) -> str:
        return "**MET**" if b else "**MISSED**"

    def table(head: list[str], rows: list[list[str]]) -> None:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in rows)
        lines.append("")

    c1, mid = r["config_1x"], r.get("mid_layer", MID_LAYER)
    desc = m1.get("desc") or f"d_model={c1['d_model']}, {c1['n_blocks']} blocks, vocab {c1['vocab']}, bf16"
    lines.append(f"Model 1x: {desc}: {nbytes / GB:.3f} GB, {m1['tensors']} tensors"
                 + (f" ({m1['names']} names)" if m1.get("names", m1["tensors"]) != m1["tensors"] else "")
                 + f", {m1['layers']} layers; largest layer `{m1['largest_layer']}` "
                 f"{m1['largest_layer_bytes'] / MB:.1f} MB; `{mid}` {m1['mid_layer_bytes'] / MB:.2f} MB.")
    if r.get("model") == "gpt2":
        lines.append("Anchors for GPT-2 (tied weights): \"safetensors save_file\" is `safetensors.torch.save_model(model, f)` "
                     "and the safetensors load is `safetensors.torch.load_model(module, f)`, safetensors' documented "
                     "calls for shared tensors; lamina saves the model (the tie becomes an alias) and torch.save its "
                     "state dict.")
    if "model_4x" in r:
        c4, m4 = r["config_4x"], r["model_4x"]
        size4 = (f"{c4['n_layer']} layers" if "n_layer" in c4 else f"{c4['n_blocks']} blocks")
        lines.append(f"Model 4x: {size4}, vocab {c4['vocab']}: {m4['bytes'] / GB:.3f} GB, "
                     f"{m4['tensors']} tensors, {m4['layers']} layers.")
    lines.append(f"Times in seconds: median of {r['reps']} (min–max) unless noted; GB = 1e9 bytes.")
    lines.append("")

    # ---- save
    s = r["save"]
    med = {k: median(v["wall"]) for k, v in s.items()}
    best = {k: min(v["wall"]) for k, v in s.items()}
    lines.append("**Save** (before every timed save: previous output of the same method deleted, "
                 + (f"{r['ballast_bytes'] / GB:.2f} GB page-cache ballast written and deleted, " if r.get("ballast_bytes") else "")
                 + "then `os.sync()`; safetensors and torch.save do not fsync)")
    lines.append("")
    rows = []
    for name, ref in [("lamina.save durable=False", "safetensors save_file"),
                      ("lamina.save durable=True", "safetensors save_file + fsync"),
                      ("lamina.save durable=True", "safetensors save_file")]:
        ratio = med[name] / med[ref]
        rows.append([f"{name} vs {ref}", fmt_range(s[name]["wall"]), f"{nbytes / med[name] / GB:.2f}",
                     f"{median(s[name]['cpu']):.2f}", f"{ratio:.2f}", f"{best[name] / best[ref]:.2f}",
                     "<= 1.0", ok(ratio <= 1.0)])
    for name in ("safetensors save_file", "safetensors save_file + fsync", "torch.save"):
        rows.append([name, fmt_range(s[name]["wall"]), f"{nbytes / med[name] / GB:.2f}",
                     f"{median(s[name]['cpu']):.2f}", "", "", "", ""])
    table(["method", "wall s", "GB/s", "CPU s", "ratio (median)", "ratio (best)", "target", "met?"], rows)

    if "save_breakdown" in r:
        b = r["save_breakdown"]
        lines.append("*Save breakdown* (same bytes, same protocol, median; \"stubbed\" = lamina.save with "
                     "`lamina.snapshot.writer.hashlib` replaced by a no-op for the call)")
        lines.append("")
        rows = [[name, fmt_range(v["wall"]), f"{nbytes / median(v['wall']) / GB:.2f}", f"{median(v['cpu']):.2f}"]
                for name, v in b.items()]
        table(["variant", "wall s", "GB/s", "CPU s"], rows)

    # ---- memory
    if "mem" in r:
        mem = r["mem"]
        limit = m1["largest_layer_bytes"] + MEM_SLACK
        lines.append(f"**Peak extra memory** (fresh process per call; VmHWM after the call minus VmRSS before "
                     f"it, VmHWM reset via /proc/self/clear_refs). Save target: <= largest layer + 64 MiB "
                     f"= {limit / MB:.1f} MB")
        lines.append("")
        rows = []
        for key, v in mem.items():
            is_target = key.startswith("save lamina")
            rows.append([key, f"{v['extra'] / MB:.1f}", f"{v['extra'] / nbytes * 100:.1f}%",
                         f"<= {limit / MB:.0f} MB" if is_target else "", ok(v["extra"] <= limit) if is_target else ""])
        table(["call", "extra MB", "% of model", "target", "met?"], rows)

    # ---- load
    ld = r["load_s"]
    lam, stl = median(ld[LOAD_LAMINA]), median(ld[LOAD_ST])
    lines.append("**Full load into an existing module** (warm page cache, module memory resident, "
                 "values checked after the warm-up call)")
    lines.append("")
    rows = []
    for name, v in ld.items():
        t = median(v)
        is_lam = name == LOAD_LAMINA
        rows.append([name, fmt_range(v), f"{nbytes / t / GB:.2f}", f"{stl / t:.2f}",
                     ">= 0.9" if is_lam else "", ok(stl / lam >= 0.9) if is_lam else ""])
    table(["method", "wall s", "GB/s", "throughput vs safetensors", "target", "met?"], rows)

    # ---- one layer
    l1 = r["layer_1x_s"]
    tl = median(r["torch_load_1x_s"])
    lines.append(f"**One-layer load** `lamina.open(p).layer(\"{mid}\")` ({m1['mid_layer_bytes'] / MB:.1f} MB; "
                 f"open() with its manifest decode included; warm cache; median of {len(l1['total'])}), in ms")
    lines.append("")
    rows = []
    variants = [("1x", "layer_1x_s", "st_layer_1x_s")]
    if "layer_4x_s" in r:
        variants.append(("4x", "layer_4x_s", "st_layer_4x_s"))
    for label, key, stkey in variants:
        v = r[key]
        t = median(v["total"])
        rows.append([f"lamina open + layer, {label}", f"{t * 1e3:.2f}", f"{median(v['open']) * 1e3:.2f}",
                     f"{median(v['layer']) * 1e3:.2f}", f"{tl / t:.0f}x", ">= 100x", ok(tl / t >= 100)])
        rows.append([f"(context) safetensors safe_open + get_tensor, {label}", f"{median(r[stkey]) * 1e3:.2f}",
                     "", "", f"{tl / median(r[stkey]):.0f}x", "", ""])
    tls = r["torch_load_1x_s"]
    rows.append([f"torch.load(weights_only=True) of the whole 1x file (median of {len(tls)}; "
                 f"range {min(tls) * 1e3:.0f}–{max(tls) * 1e3:.0f} ms)", f"{tl * 1e3:.1f}", "", "", "1x", "", ""])
    table(["call", "total ms", "open ms", "layer ms", "speed-up vs torch.load 1x", "target", "met?"], rows)
    if "layer_4x_s" in r:
        t1, t4 = median(l1["total"]), median(r["layer_4x_s"]["total"])
        lines.append(f"4x/1x one-layer time: {t4 / t1:.2f} (model bytes x{r['model_4x']['bytes'] / nbytes:.2f}, "
                     f"tensors x{r['model_4x']['tensors'] / m1['tensors']:.2f}); the layer read itself: "
                     f"x{median(r['layer_4x_s']['layer']) / median(l1['layer']):.2f}.")
        lines.append("")
    for key in ("open_split_1x", "open_split_4x"):
        if key in r:
            lines.append(f"*open() split, {key[-2:]}* (median ms): "
                         + "; ".join(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}" for k, v in r[key].items()))
            lines.append("")
    lines.append(f"Machine load: start `{r['pressure_start']['loadavg']}`, end `{r['pressure_end']['loadavg']}` "
                 f"(loadavg). Total benchmark wall time: {r['wall_s']:.0f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
