"""lamina performance benchmark: save, save memory, full load, one-layer load.

    python bench/run.py                 # full run (~0.73 GB model, plus a 4x ~2.9 GB one); a few minutes
    python bench/run.py --scale 0.1     # quick smoke run (fewer blocks, smaller vocabulary)
    python bench/run.py --out DIR       # where data goes (default: a temp dir under bench/_data)

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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import safetensors  # noqa: E402
import safetensors.torch  # noqa: E402
import torch  # noqa: E402

import lamina  # noqa: E402
from _common import (  # noqa: E402
    MID_LAYER,
    Config,
    build_module,
    fsync_path,
    layer_bytes,
    make_state_dict,
    median,
    read_all,
    rm,
    timed,
    total_bytes,
)

MB = 1e6
GB = 1e9
MEM_SLACK = 64 * 2**20  # the save-memory target: largest layer + 64 MiB


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
def bench_save(sd: dict, out: Path, reps: int) -> dict[str, list[float]]:
    """Median-of-reps save times. Every timed save starts from the same state: target removed,
    then ``os.sync()`` so no dirty pages of an earlier run are being written back meanwhile.
    Methods run round-robin, in a shuffled order per repetition, after one untimed warm-up round."""

    def st_fsync(p: Path) -> None:
        safetensors.torch.save_file(sd, p)
        fsync_path(p)
        fsync_path(p.parent)

    methods = {
        "lamina.save durable=True": (out / "lamina_durable", lambda p: lamina.save(sd, p, durable=True)),
        "lamina.save durable=False": (out / "lamina_fast", lambda p: lamina.save(sd, p, durable=False)),
        "safetensors save_file": (out / "st.safetensors", lambda p: safetensors.torch.save_file(sd, p)),
        "safetensors save_file + fsync": (out / "st_fsync.safetensors", st_fsync),
        "torch.save": (out / "model.pt", lambda p: torch.save(sd, p)),
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    rng = random.Random(0)
    for rep in range(reps + 1):
        order = list(methods)
        rng.shuffle(order)
        for name in order:
            path, fn = methods[name]
            rm(path)
            os.sync()
            t = timed(lambda: fn(path))
            if rep:
                times[name].append(t)
        log(f"  save round {rep}/{reps}{' (warm-up)' if rep == 0 else ''}: "
            + ", ".join(f"{n.split(' ', 1)[0]}{'/fast' if 'False' in n else ''}{'+fsync' if 'fsync' in n else ''}"
                        f"={times[n][-1] if rep else 0:.2f}s" for n in methods))
    os.sync()
    return times


def save_breakdown(sd: dict, out: Path, reps: int) -> dict[str, float]:
    """Where lamina.save(durable=False) time goes, approximated by its parts done by hand on the
    same data: the plain writes (one file per layer, no hashing) and sha256 of every byte alone."""
    import hashlib

    from _common import layer_bytes as _lb  # noqa: F401 (keeps the import list obvious)

    groups: dict[str, list] = {}
    for name, t in sd.items():
        groups.setdefault(name.rpartition(".")[0], []).append(t)

    def write_only(root: Path) -> None:
        root.mkdir()
        for layer, ts in groups.items():
            with open(root / f"{layer}.bin", "wb", buffering=0) as f:
                for t in ts:
                    f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))

    def hash_only() -> None:
        for ts in groups.values():
            h = hashlib.sha256()
            for t in ts:
                h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            h.hexdigest()

    res: dict[str, list[float]] = {"write only (per-layer files, no hash)": [], "sha256 only (1 thread)": []}
    for _ in range(reps):
        root = out / "breakdown"
        rm(root)
        os.sync()
        res["write only (per-layer files, no hash)"].append(timed(lambda: write_only(root)))
        res["sha256 only (1 thread)"].append(timed(hash_only))
    rm(out / "breakdown")
    os.sync()
    return {k: median(v) for k, v in res.items()}


# ----------------------------------------------------------------------------------- memory
def mem_worker(kind: str, method: str, path: Path, cfg: Config) -> dict:
    cmd = [sys.executable, str(HERE / "_memworker.py"), kind, method, str(path), *cfg.args()]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- load
def bench_load(paths: dict[str, Path], sd: dict, cfg: Config, reps: int) -> dict[str, list[float]]:
    module = build_module(cfg)
    methods = {
        "lamina open().load_into(module)": lambda: lamina.open(paths["lamina"]).load_into(module),
        "module.load_state_dict(safetensors load_file)":
            lambda: module.load_state_dict(safetensors.torch.load_file(paths["safetensors"])),
        "module.load_state_dict(torch.load weights_only)":
            lambda: module.load_state_dict(torch.load(paths["torch"], weights_only=True)),
    }
    for p in paths.values():
        read_all(p)  # warm page cache
    times: dict[str, list[float]] = {m: [] for m in methods}
    for name, fn in methods.items():  # untimed warm-up, also checks the loaded values
        with torch.no_grad():
            for p in module.parameters():
                p.zero_()
        fn()
        bad = [n for n, t in module.state_dict().items() if not torch.equal(t.view(torch.uint8), sd[n].view(torch.uint8))]
        if bad:
            raise AssertionError(f"{name}: wrong values after load in {bad[:3]}")
    rng = random.Random(1)
    for _ in range(reps):
        order = list(methods)
        rng.shuffle(order)
        for name in order:
            times[name].append(timed(methods[name]))
    del module
    gc.collect()
    return times


def bench_one_layer(path: Path, sd: dict | None, reps: int) -> dict[str, list[float]]:
    """open() + layer(MID_LAYER), warm cache; also the two parts separately."""
    art = lamina.open(path)
    got = art.layer(MID_LAYER)
    if sd is not None:
        for n, t in got.items():
            assert torch.equal(t.view(torch.uint8), sd[n].view(torch.uint8)), n
    res: dict[str, list[float]] = {"total": [], "open": [], "layer": []}
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        art = lamina.open(path)
        t1 = time.perf_counter()
        art.layer(MID_LAYER)
        t2 = time.perf_counter()
        res["total"].append(t2 - t0)
        res["open"].append(t1 - t0)
        res["layer"].append(t2 - t1)
    return res


def bench_st_one_tensor(path: Path, names: list[str], reps: int) -> list[float]:
    def fn() -> None:
        with safetensors.safe_open(path, framework="pt") as f:
            for n in names:
                f.get_tensor(n).clone()  # clone: own the bytes, as lamina does (no lingering mmap)
    fn()
    return [timed(fn) for _ in range(reps)]


# ----------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="shrink the model: multiplies the block count (min 8) and vocabulary (default 1.0)")
    ap.add_argument("--out", type=Path, default=None, help="data directory (default: temp dir under bench/_data)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions for save/load (default 5)")
    ap.add_argument("--layer-reps", type=int, default=30, help="repetitions for the one-layer load (default 30)")
    ap.add_argument("--no-mem", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--no-4x", action="store_true", help="skip the 4x model")
    ap.add_argument("--keep", action="store_true", help="keep the written snapshots and files")
    args = ap.parse_args()

    t_start = time.perf_counter()
    if args.out is None:
        (HERE / "_data").mkdir(exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="run-", dir=HERE / "_data"))
    else:
        out = args.out.resolve()
        out.mkdir(parents=True, exist_ok=True)
    cfg1 = Config().scaled(args.scale, args.scale)
    cfg4 = Config(cfg1.d_model, cfg1.n_blocks * 4, cfg1.vocab * 4)
    info = machine()
    log(f"machine: {info}")
    log(f"output: {out}")

    results: dict = {"machine": info, "config_1x": cfg1.as_dict(), "config_4x": cfg4.as_dict(), "reps": args.reps}
    big: list[Path] = []
    try:
        log(f"generating 1x state dict {cfg1}")
        sd = make_state_dict(cfg1)
        nbytes = total_bytes(sd)
        lb = layer_bytes(sd)
        largest = max(lb, key=lb.get)
        results["model_1x"] = {"bytes": nbytes, "tensors": len(sd), "layers": len(lb),
                               "largest_layer": largest, "largest_layer_bytes": lb[largest],
                               "mid_layer_bytes": lb[MID_LAYER]}
        log(f"1x: {nbytes / GB:.3f} GB, {len(sd)} tensors, {len(lb)} layers, largest layer {largest} "
            f"{lb[largest] / MB:.1f} MB")

        # ---------------- save time
        save_dir = out / "save"
        save_dir.mkdir(exist_ok=True)
        big.append(save_dir)
        log(f"save: {args.reps} timed rounds + 1 warm-up, 5 methods")
        save_t = bench_save(sd, save_dir, args.reps)
        results["save_s"] = save_t
        log("save breakdown (parts of lamina.save done by hand)")
        results["save_breakdown_s"] = save_breakdown(sd, save_dir, max(3, args.reps // 2 + 1))

        paths = {"lamina": save_dir / "lamina_durable", "safetensors": save_dir / "st.safetensors",
                 "torch": save_dir / "model.pt"}
        results["file_bytes"] = {k: (sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir()
                                     else p.stat().st_size) for k, p in paths.items()}

        # ---------------- memory (fresh subprocess per method)
        if not args.no_mem:
            mem_dir = out / "mem"
            mem_dir.mkdir(exist_ok=True)
            big.append(mem_dir)
            mem: dict[str, dict] = {}
            for method, target in [("lamina_durable", "lam_d"), ("lamina_nondurable", "lam_f"),
                                   ("safetensors", "st.safetensors"), ("torch", "model.pt")]:
                rm(mem_dir / target)
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
        results["load_s"] = bench_load(paths, sd, cfg1, args.reps)

        # ---------------- one layer at 1x, torch.load whole file
        log("one-layer load 1x")
        results["layer_1x_s"] = bench_one_layer(paths["lamina"], sd, args.layer_reps)
        layer_names = [n for n in sd if n.rpartition(".")[0] == MID_LAYER]
        results["st_layer_1x_s"] = bench_st_one_tensor(paths["safetensors"], layer_names, args.layer_reps)
        log("torch.load whole 1x file (warm)")
        torch.load(paths["torch"], weights_only=True)
        results["torch_load_1x_s"] = [timed(lambda: torch.load(paths["torch"], weights_only=True))
                                      for _ in range(max(3, args.reps // 2 + 1))]
        del sd
        gc.collect()

        # ---------------- 4x
        if not args.no_4x:
            log(f"generating 4x state dict {cfg4}")
            sd4 = make_state_dict(cfg4, seed=4)
            lb4 = layer_bytes(sd4)
            results["model_4x"] = {"bytes": total_bytes(sd4), "tensors": len(sd4), "layers": len(lb4)}
            log(f"4x: {total_bytes(sd4) / GB:.3f} GB, {len(sd4)} tensors, {len(lb4)} layers; saving")
            x4 = out / "x4"
            x4.mkdir(exist_ok=True)
            big.append(x4)
            lamina.save(sd4, x4 / "lamina", durable=False)
            safetensors.torch.save_file(sd4, x4 / "st.safetensors")
            ref = {n: sd4[n].clone() for n in layer_names}
            del sd4
            gc.collect()
            os.sync()
            log("one-layer load 4x")
            results["layer_4x_s"] = bench_one_layer(x4 / "lamina", ref, args.layer_reps)
            results["st_layer_4x_s"] = bench_st_one_tensor(x4 / "st.safetensors", layer_names, args.layer_reps)
    finally:
        if not args.keep:
            for p in big:
                rm(p)
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
    ok = lambda b: "MET" if b else "MISSED"  # noqa: E731

    def table(head: list[str], rows: list[list[str]]) -> None:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in rows)
        lines.append("")

    c1 = r["config_1x"]
    lines.append(f"Model 1x: d_model={c1['d_model']}, {c1['n_blocks']} blocks, vocab {c1['vocab']}, bf16: "
                 f"{nbytes / GB:.3f} GB, {m1['tensors']} tensors, {m1['layers']} layers; largest layer "
                 f"`{m1['largest_layer']}` {m1['largest_layer_bytes'] / MB:.1f} MB; `{MID_LAYER}` "
                 f"{m1['mid_layer_bytes'] / MB:.2f} MB.")
    if "model_4x" in r:
        c4, m4 = r["config_4x"], r["model_4x"]
        lines.append(f"Model 4x: {c4['n_blocks']} blocks, vocab {c4['vocab']}: {m4['bytes'] / GB:.3f} GB, "
                     f"{m4['tensors']} tensors, {m4['layers']} layers.")
    lines.append(f"Times: median of {r['reps']} (min–max) in seconds, unless noted.")
    lines.append("")

    # save
    s = r["save_s"]
    st, st_sync = median(s["safetensors save_file"]), median(s["safetensors save_file + fsync"])
    lines.append("**Save** (page cache: target removed and `os.sync()` before every timed save; "
                 "safetensors and torch.save do not fsync)")
    lines.append("")
    rows = []
    for name, ref_name, ref in [("lamina.save durable=False", "safetensors save_file", st),
                                ("lamina.save durable=True", "safetensors save_file + fsync", st_sync),
                                ("lamina.save durable=True", "safetensors save_file", st)]:
        v = median(s[name])
        rows.append([f"{name} vs {ref_name}", fmt_range(s[name]), f"{nbytes / v / GB:.2f}", f"{v / ref:.2f}",
                     "<= 1.0", ok(v / ref <= 1.0)])
    for name in ("safetensors save_file", "safetensors save_file + fsync", "torch.save"):
        v = median(s[name])
        rows.append([name, fmt_range(s[name]), f"{nbytes / v / GB:.2f}", f"{v / st:.2f} (vs save_file)", "", ""])
    table(["method", "time s", "GB/s", "ratio lamina/safetensors", "target", "met?"], rows)
    if "save_breakdown_s" in r:
        b = r["save_breakdown_s"]
        lines.append("Save breakdown (same bytes, done by hand, median): "
                     + "; ".join(f"{k}: {v:.3f} s ({nbytes / v / GB:.2f} GB/s)" for k, v in b.items()))
        lines.append("")

    # memory
    if "mem" in r:
        mem = r["mem"]
        limit = m1["largest_layer_bytes"] + MEM_SLACK
        lines.append(f"**Peak extra memory** (fresh process per method; VmHWM after the call minus VmRSS "
                     f"before it, VmHWM reset via /proc/self/clear_refs). Save target: <= largest layer + "
                     f"64 MiB = {limit / MB:.1f} MB")
        lines.append("")
        rows = []
        for key, v in mem.items():
            is_lamina_save = key.startswith("save lamina")
            rows.append([key, f"{v['extra'] / MB:.1f}", f"{v['extra'] / nbytes * 100:.1f}%",
                         f"<= {limit / MB:.0f} MB" if is_lamina_save else "",
                         ok(v["extra"] <= limit) if is_lamina_save else ""])
        table(["call", "extra MB", "% of model", "target", "met?"], rows)

    # load
    ld = r["load_s"]
    lam = median(ld["lamina open().load_into(module)"])
    stl = median(ld["module.load_state_dict(safetensors load_file)"])
    lines.append("**Full load into an existing module** (warm page cache; module memory resident)")
    lines.append("")
    rows = []
    for name, v in ld.items():
        t = median(v)
        is_lam = name.startswith("lamina")
        rows.append([name, fmt_range(v), f"{nbytes / t / GB:.2f}",
                     f"{stl / lam:.2f}" if is_lam else f"{stl / t:.2f} (vs safetensors)",
                     ">= 0.9" if is_lam else "", ok(stl / lam >= 0.9) if is_lam else ""])
    table(["method", "time s", "GB/s", "throughput ratio lamina/safetensors", "target", "met?"], rows)

    # one layer
    l1 = r["layer_1x_s"]
    tl = median(r["torch_load_1x_s"])
    lines.append(f"**One-layer load** `lamina.open(p).layer(\"{MID_LAYER}\")` (open + manifest decode included; "
                 f"warm cache; median of {len(l1['total'])}), in milliseconds")
    lines.append("")
    rows = []
    variants = [("1x", "layer_1x_s", "st_layer_1x_s")]
    if "layer_4x_s" in r:
        variants.append(("4x", "layer_4x_s", "st_layer_4x_s"))
    for label, key, stkey in variants:
        v = r[key]
        t = median(v["total"])
        rows.append([f"lamina open+layer, {label}", f"{t * 1e3:.2f}", f"{median(v['open']) * 1e3:.2f}",
                     f"{median(v['layer']) * 1e3:.2f}", f"{tl / t:.0f}x", ">= 100x", ok(tl / t >= 100)])
        rows.append([f"(context) safetensors safe_open+get_tensor, {label}", f"{median(r[stkey]) * 1e3:.2f}",
                     "", "", f"{tl / median(r[stkey]):.0f}x", "", ""])
    rows.append(["torch.load whole 1x file", f"{tl * 1e3:.1f}", "", "", "1x", "", ""])
    table(["call", "total ms", "open ms", "layer ms", "speed-up vs torch.load 1x", "target", "met?"], rows)
    if "layer_4x_s" in r:
        t1, t4 = median(l1["total"]), median(r["layer_4x_s"]["total"])
        lines.append(f"4x/1x one-layer time: {t4 / t1:.2f} (model bytes x{r['model_4x']['bytes'] / nbytes:.2f}, "
                     f"tensors x{r['model_4x']['tensors'] / m1['tensors']:.2f}).")
        lines.append("")
    lines.append(f"Total benchmark wall time: {r['wall_s']:.0f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
