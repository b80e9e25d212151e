"""lamina benchmark: repositories (bytes uploaded per version) and remote reads over HTTP.

    python bench/repo_remote.py                  # 512 MB float32 model: ~1.5 min on 2 cores, ~3 GB disk at peak
    python bench/repo_remote.py --size-mb 64     # quick smoke run
    python bench/repo_remote.py --out DIR --keep # data directory of your choice, kept afterwards

Three measurements, each printed as a ratio against an anchor measured in the same run:

1. **Bytes uploaded for a second version with one changed layer.** A 24-layer model
   (``layers.{i}.weight``, float32, equal sizes, plus a small ``embed.weight``) is saved and pushed
   to a local ``lamina.Repo``; ``layers.7.weight`` is changed and v2 pushed. lamina's
   ``PushResult.uploaded_bytes`` against what a file-addressed Hugging Face upload transfers: both
   versions written with ``huggingface_hub.save_torch_state_dict`` (``max_shard_size="5GB"``, and
   a shard size in the proportion 5 GB : 7B bf16 model), the bytes of every file whose sha256
   changed. The same ratio is then *computed* (no data) for a 7B-parameter bf16 Llama-style
   layout from huggingface_hub's shard plan over meta tensors and lamina's shard layout (the
   method is checked against the measured files first).
2. **One layer over HTTP**: ``lamina.open(url, cache=False).layer("layers.7")`` against a plain GET
   of the single-file ``model.safetensors`` plus ``safetensors.torch.load``; time and bytes served.
3. **Full remote load**: ``lamina.open(url, cache=False, max_concurrency=c).state_dict()`` for
   c = 1, 4, 16, in MB/s, against one plain GET of the single file.

2 and 3 are then repeated with the server waiting ``--latency-ms`` (default 20) before answering
each request, a stand-in for a network round trip (loopback has none).

The HTTP server is ``tests/servers.py``'s ``RangeHTTPServer`` (threaded, TCP_NODELAY, counts the
bytes it serves) on 127.0.0.1, run in a child process so that it does not share the client's GIL.
Results go to ``results.json`` / ``results.md`` in the output directory; the model files are
removed at the end unless ``--keep``. See docs/performance.md, "Repositories and remote reads".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path.insert(0, str(HERE))

import huggingface_hub  # noqa: E402
import safetensors  # noqa: E402
import safetensors.torch  # noqa: E402
import torch  # noqa: E402
import urllib3  # noqa: E402
from _common import cpu_seconds, median, pressure, read_all, rm, timed_cpu  # noqa: E402

import lamina  # noqa: E402
from lamina.format.naming import default_layer
from lamina.format.shards import plan_shard

MB = 1e6
N_LAYERS = 24
COLS = 1024
CHANGED = "layers.7"  # the layer changed in v2 and read by the one-layer benchmark
CHANGED_TENSOR = CHANGED + ".weight"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next(int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem / 2**30, 1), "kernel": platform.release(),
            "python": platform.python_version(), "torch": torch.__version__, "safetensors": safetensors.__version__,
            "huggingface_hub": huggingface_hub.__version__, "urllib3": urllib3.__version__,
            "lamina": lamina.__version__}


def fmt_range(xs: list[float], scale: float = 1.0, digits: int = 1) -> str:
    return f"{median(xs) * scale:.{digits}f} ({min(xs) * scale:.{digits}f}–{max(xs) * scale:.{digits}f})"


# ----------------------------------------------------------------------------------- the model
def make_model(size_mb: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """``embed.weight`` (1024x1024 float32, 4.2 MB) and 24 equal float32 ``layers.{i}.weight``
    (rows x 1024) adding up to ~``size_mb``. Values are copied at a different offset per tensor out
    of one 64 MiB block of ``randn`` (``torch.randn`` itself is slow on this machine)."""
    rows = max(1, round((size_mb * MB - COLS * COLS * 4) / N_LAYERS / (COLS * 4)))
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(16 << 20, generator=g)
    shapes = {"embed.weight": (COLS, COLS)} | {f"layers.{i}.weight": (rows, COLS) for i in range(N_LAYERS)}
    out = {}
    for i, (name, shape) in enumerate(shapes.items()):
        n = shape[0] * shape[1]
        flat = torch.empty(n)
        off, pos = (i * 2_654_435_761) % pool.numel(), 0
        while pos < n:
            k = min(n - pos, pool.numel() - off)
            flat[pos : pos + k].copy_(pool[off : off + k])
            pos, off = pos + k, 0
        out[name] = flat.view(shape)
    return out


def nbytes(sd: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


def file_hashes(root: Path) -> dict[str, tuple[int, str]]:
    """relative path -> (size, sha256) of every file under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb", buffering=0) as f:
                while chunk := f.read(16 << 20):
                    h.update(chunk)
            out[p.relative_to(root).as_posix()] = (p.stat().st_size, h.hexdigest())
    return out


def changed_files(a: dict[str, tuple[int, str]], b: dict[str, tuple[int, str]]) -> dict[str, int]:
    """Files of ``b`` that ``a`` lacks or holds with other content: what a file-addressed
    (sha256/LFS-oid) upload of ``b`` transfers when ``a`` is already there."""
    return {p: size for p, (size, sha) in b.items() if a.get(p, (None, None))[1] != sha}


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and ".lamina-locks" not in p.parts}


# ----------------------------------------------------------------------------------- 1. uploads
def hf_file_sizes(shapes: dict[str, tuple[tuple[int, ...], str]], max_shard_size: str | int
                  ) -> tuple[dict[str, int], dict[str, str]]:
    """Computed: the files ``save_torch_state_dict`` would write (shard plan from
    huggingface_hub over meta tensors, header bytes from the safetensors layout) -> size, and
    tensor -> file."""
    meta = {n: torch.empty(s, dtype=getattr(torch, dt), device="meta") for n, (s, dt) in shapes.items()}
    split = huggingface_hub.split_torch_state_dict_into_shards(meta, max_shard_size=max_shard_size)
    code = {"float32": "F32", "bfloat16": "BF16"}
    sizes = {}
    for fname, names in split.filename_to_tensors.items():
        header, entries = plan_shard([(n, code[shapes[n][1]], shapes[n][0]) for n in names])
        sizes[fname] = len(header) + sum(e.nbytes for e in entries)
    return sizes, split.tensor_to_filename


def lamina_shard_sizes(shapes: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, int]:
    """Computed: lamina layer -> size of its shard file (one shard per layer)."""
    code = {"float32": "F32", "bfloat16": "BF16"}
    layers: dict[str, list] = {}
    for n, (s, dt) in shapes.items():
        layers.setdefault(default_layer(n), []).append((n, code[dt], s))
    out = {}
    for layer, tensors in layers.items():
        header, entries = plan_shard(tensors)
        out[layer] = len(header) + sum(e.nbytes for e in entries)
    return out


def computed_upload(shapes: dict, changed: set[str], manifest_bytes: int, max_shard_size: str | int) -> dict:
    hf_sizes, where = hf_file_sizes(shapes, max_shard_size)
    hf_changed = {where[n] for n in changed}
    lam = lamina_shard_sizes(shapes)
    lam_changed = {default_layer(n) for n in changed}
    return {"lamina_bytes": sum(lam[x] for x in lam_changed) + manifest_bytes, "lamina_files": len(lam_changed) + 1,
            "hf_bytes": sum(hf_sizes[f] for f in hf_changed), "hf_files": len(hf_changed),
            "hf_total_files": len(hf_sizes), "model_bytes": sum(hf_sizes.values())}


def llama7b_shapes() -> dict[str, tuple[tuple[int, ...], str]]:
    """Llama-2-7B's state dict names and shapes, bf16 (6.74 B parameters, 13.5 GB)."""
    vocab, d, ff, n = 32000, 4096, 11008, 32
    s: dict[str, tuple[tuple[int, ...], str]] = {"model.embed_tokens.weight": ((vocab, d), "bfloat16")}
    for i in range(n):
        p = f"model.layers.{i}."
        for proj in ("q", "k", "v", "o"):
            s[f"{p}self_attn.{proj}_proj.weight"] = ((d, d), "bfloat16")
        s[f"{p}mlp.gate_proj.weight"] = ((ff, d), "bfloat16")
        s[f"{p}mlp.up_proj.weight"] = ((ff, d), "bfloat16")
        s[f"{p}mlp.down_proj.weight"] = ((d, ff), "bfloat16")
        s[f"{p}input_layernorm.weight"] = ((d,), "bfloat16")
        s[f"{p}post_attention_layernorm.weight"] = ((d,), "bfloat16")
    s["model.norm.weight"] = ((d,), "bfloat16")
    s["lm_head.weight"] = ((vocab, d), "bfloat16")
    return s


def shrunk_manifest_bytes(shapes: dict, out: Path) -> int:
    """manifest.msgpack size of a real lamina snapshot with the same tensor names and every
    dimension divided by 64 (the manifest holds names, shapes, offsets and sha256s: its size
    hardly depends on the data size; larger offsets cost a few bytes each)."""
    small = {n: torch.zeros(tuple(max(1, x // 64) for x in s), dtype=getattr(torch, dt))
             for n, (s, dt) in shapes.items()}
    path = out / "shrunk_7b"
    lamina.save(small, path, durable=False)
    size = (path / "manifest.msgpack").stat().st_size
    rm(path)
    return size


def bench_uploads(sd1: dict, sd2: dict, out: Path, shard3: int) -> dict:
    res: dict = {"model_bytes": nbytes(sd1)}
    snap1, snap2, repo_dir = out / "snap_v1", out / "snap_v2", out / "repo"
    lamina.save(sd1, snap1, durable=False)
    lamina.save(sd2, snap2, durable=False)
    repo = lamina.Repo(repo_dir)
    t0 = time.perf_counter()
    r1 = repo.push(snap1, message="v1")
    res["push_v1_s"] = time.perf_counter() - t0
    before = tree_state(repo_dir)
    t0 = time.perf_counter()
    r2 = repo.push(snap2, message="v2: layers.7 changed")
    res["push_v2_s"] = time.perf_counter() - t0
    after = tree_state(repo_dir)
    res["lamina_v1"] = {"uploaded_bytes": r1.uploaded_bytes, "uploaded_files": r1.uploaded_files}
    res["lamina_v2"] = {"uploaded_bytes": r2.uploaded_bytes, "uploaded_files": r2.uploaded_files,
                        "reused_bytes": r2.reused_bytes, "reused_files": r2.reused_files}
    new = {p: s for p, (s, m) in after.items() if before.get(p) != (s, m)}
    res["repo_new_bytes"] = sum(new.values())  # cross-check: blobs + manifest + revision + ref, from the disk
    res["repo_new_files"] = len(new)
    assert repo.diff(r1.revision, r2.revision).changed == [CHANGED], "the diff should name exactly one layer"

    # The same arithmetic as the 7B estimate below, checked against the measured push.
    shapes = {n: (tuple(t.shape), "float32") for n, t in sd1.items()}
    manifest2 = (snap2 / "manifest.msgpack").stat().st_size
    est = computed_upload(shapes, {CHANGED_TENSOR}, manifest2, "5GB")
    res["lamina_v2_computed"] = est["lamina_bytes"]

    # Hugging Face layout: written by huggingface_hub itself, both versions, files compared by sha256.
    res["hf"] = {}
    for label, max_size in (("5GB", "5GB"), ("7B-like", shard3)):
        d1, d2 = out / f"hf_{label}_v1", out / f"hf_{label}_v2"
        d1.mkdir()
        d2.mkdir()
        huggingface_hub.save_torch_state_dict(sd1, d1, max_shard_size=max_size)
        huggingface_hub.save_torch_state_dict(sd2, d2, max_shard_size=max_size)
        h1, h2 = file_hashes(d1), file_hashes(d2)
        changed = changed_files(h1, h2)
        computed_sizes, _ = hf_file_sizes(shapes, max_size)
        weight_sizes = {p: s for p, (s, _) in h2.items() if p.endswith(".safetensors")}
        assert computed_sizes == weight_sizes, f"computed HF layout {computed_sizes} != written {weight_sizes}"
        res["hf"][label] = {"max_shard_size": max_size, "files": {p: s for p, (s, _) in h2.items()},
                            "changed": changed, "changed_bytes": sum(changed.values())}
        if label != "5GB":
            rm(d1)
        rm(d2)
    rm(snap2)

    # 7B bf16, computed (no data).
    shapes7 = llama7b_shapes()
    manifest7 = shrunk_manifest_bytes(shapes7, out)
    block = {n for n in shapes7 if n.startswith("model.layers.7.")}
    scenarios = {
        "one decoder block (model.layers.7.*, 9 tensors)": block,
        "one matrix (model.layers.7.self_attn.q_proj.weight)": {"model.layers.7.self_attn.q_proj.weight"},
        "q_proj + v_proj of all 32 blocks (merged LoRA)": {n for n in shapes7 if ".q_proj." in n or ".v_proj." in n},
        "every tensor (full fine-tune)": set(shapes7),
    }
    res["llama7b"] = {"manifest_bytes": manifest7, "params": sum(torch.Size(s).numel() for s, _ in shapes7.values()),
                      "scenarios": {k: computed_upload(shapes7, v, manifest7, "5GB") for k, v in scenarios.items()}}
    return res


# ----------------------------------------------------------------------------------- HTTP server
def _serve(root: str, conn) -> None:  # noqa: ANN001 - a multiprocessing Connection
    """Child process: RangeHTTPServer on ``root``; answers "reset" / "stats" / ("latency", s) /
    "stop" on ``conn``. A latency makes every request wait that long before it is answered (a
    stand-in for a network round trip; bandwidth stays loopback's)."""
    sys.path.insert(0, str(TESTS))
    import servers

    nagle_was_disabled = bool(getattr(servers._Handler, "disable_nagle_algorithm", False))
    servers._Handler.disable_nagle_algorithm = True  # no-op when the server sets it itself
    delay = [0.0]
    answer = servers._Handler._answer

    def delayed(self, body: bool) -> None:  # noqa: ANN001
        if delay[0]:
            time.sleep(delay[0])
        answer(self, body)

    servers._Handler._answer = delayed
    with servers.RangeHTTPServer(root) as srv:
        conn.send((srv.url, nagle_was_disabled))
        cpu0 = cpu_seconds()
        while True:
            cmd = conn.recv()
            if cmd == "reset":
                srv.reset()
                cpu0 = cpu_seconds()
                conn.send(None)
            elif cmd == "stats":
                with srv._lock:
                    conn.send((srv.bytes_served, len(srv.requests), cpu_seconds() - cpu0))
            elif isinstance(cmd, tuple) and cmd[0] == "latency":
                delay[0] = cmd[1]
                conn.send(None)
            else:
                break


class Server:
    def __init__(self, root: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(str(root), child), daemon=True)
        self.proc.start()
        self.url, self.nagle_was_disabled = self.conn.recv()

    def reset(self) -> None:
        self.conn.send("reset")
        self.conn.recv()

    def latency(self, seconds: float) -> None:
        self.conn.send(("latency", seconds))
        self.conn.recv()

    def stats(self) -> tuple[int, int, float]:
        self.conn.send("stats")
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send("stop")
        except OSError:
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()


def http_get(url: str) -> bytes:
    """One plain GET with a fresh urllib3 pool (lamina.open also starts a fresh pool each call)."""
    r = urllib3.PoolManager().request("GET", url, preload_content=True)
    assert r.status == 200, r.status
    return r.data


def measure(server: Server, fn) -> tuple[float, float, int, int, float]:  # noqa: ANN001
    """(wall seconds, client CPU seconds, bytes served, requests, server CPU seconds) of one call."""
    server.reset()
    t, cpu = timed_cpu(fn)
    served, requests, server_cpu = server.stats()
    return t, cpu, served, requests, server_cpu


def run_methods(server: Server, methods: dict, rounds: int, label: str) -> dict[str, dict[str, list]]:
    """Each method once untimed, then ``rounds`` rounds in a shuffled order each."""
    for fn in methods.values():
        fn()
    res: dict[str, dict[str, list]] = {m: {k: [] for k in KEYS} for m in methods}
    rng = random.Random(label)
    for i in range(rounds):
        order = list(methods)
        rng.shuffle(order)
        for name in order:
            for key, value in zip(KEYS, measure(server, methods[name])):
                res[name][key].append(value)
        log(f"  {label} round {i + 1}/{rounds}: " + ", ".join(f"{m}={res[m]['s'][-1] * 1e3:.0f}ms" for m in order))
    return res


KEYS = ("s", "cpu", "bytes", "requests", "server_cpu")
LAYER_LAMINA = f'lamina.open(url, cache=False).layer("{CHANGED}")'
LAYER_ANCHOR = f'GET model.safetensors + safetensors.torch.load, take "{CHANGED_TENSOR}"'
FULL_GET = "one plain GET of model.safetensors (bytes only)"
FULL_GET_LOAD = "GET model.safetensors + safetensors.torch.load"


def full_lamina(c: int) -> str:
    return f"lamina.open(url, cache=False, max_concurrency={c}).state_dict()"


def bench_remote(sd: dict, out: Path, layer_rounds: int, full_rounds: int, latency_ms: float,
                 latency_rounds: int) -> dict:
    res: dict = {}
    for p in (out / "snap_v1", out / "hf_5GB_v1"):
        read_all(p)  # the server reads from a warm page cache
    server = Server(out)
    res["nagle_disabled_by_server"] = server.nagle_was_disabled
    try:
        snap_url, st_url = f"{server.url}/snap_v1", f"{server.url}/hf_5GB_v1/model.safetensors"
        # Correctness first (untimed): every byte as saved.
        got = lamina.open(snap_url, cache=False).layer(CHANGED)
        assert got.keys() == {CHANGED_TENSOR} and torch.equal(got[CHANGED_TENSOR], sd[CHANGED_TENSOR])
        full = lamina.open(snap_url, cache=False, max_concurrency=4).state_dict()
        assert full.keys() == sd.keys() and all(torch.equal(full[n], sd[n]) for n in sd)
        del got, full

        lam_layer = lambda: lamina.open(snap_url, cache=False).layer(CHANGED)  # noqa: E731
        anchor = lambda: safetensors.torch.load(http_get(st_url))[CHANGED_TENSOR]  # noqa: E731
        log(f"one layer over HTTP: {layer_rounds} rounds (lamina 3 calls per round, anchor 1)")
        res["layer"] = run_methods(server, {f"{LAYER_LAMINA} #{k}": lam_layer for k in range(3)}
                                   | {LAYER_ANCHOR: anchor}, layer_rounds, "layer")
        merged: dict[str, list] = {k: [] for k in KEYS}
        for k in range(3):
            one = res["layer"].pop(f"{LAYER_LAMINA} #{k}")
            for key in merged:
                merged[key] += one[key]
        res["layer"] = {LAYER_LAMINA: merged, LAYER_ANCHOR: res["layer"][LAYER_ANCHOR]}

        methods = {full_lamina(c): (lambda c=c: lamina.open(snap_url, cache=False, max_concurrency=c).state_dict())
                   for c in (1, 4, 16)}
        methods[FULL_GET] = lambda: http_get(st_url)
        methods[FULL_GET_LOAD] = lambda: safetensors.torch.load(http_get(st_url))
        log(f"full load over HTTP: {full_rounds} rounds")
        res["full"] = run_methods(server, methods, full_rounds, "full")

        if latency_ms > 0 and latency_rounds > 0:
            server.latency(latency_ms / 1e3)
            log(f"with {latency_ms:g} ms added to every request: {latency_rounds} rounds")
            res["layer_latency"] = run_methods(server, {LAYER_LAMINA: lam_layer, LAYER_ANCHOR: anchor},
                                               latency_rounds, "layer+latency")
            del methods[FULL_GET_LOAD]
            res["full_latency"] = run_methods(server, methods, latency_rounds, "full+latency")
            res["latency_ms"] = latency_ms
    finally:
        server.close()
    return res


# ----------------------------------------------------------------------------------- report
def report(r: dict) -> str:
    lines: list[str] = []

    def table(head: list[str], rows: list[list[str]]) -> None:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in rows)
        lines.append("")

    u = r["uploads"]
    model = u["model_bytes"]
    lam = u["lamina_v2"]["uploaded_bytes"]
    lines.append(f"Model: `embed.weight` 1024x1024 + {N_LAYERS} x `layers.{{i}}.weight` {r['rows']}x{COLS}, float32: "
                 f"{model / MB:.1f} MB; one layer {r['layer_bytes'] / MB:.2f} MB. MB = 1e6 bytes.")
    lines.append("")
    lines.append(f"**1. Bytes uploaded for v2 (`{CHANGED_TENSOR}` changed), measured**")
    lines.append("")
    rows = [[f"lamina `Repo.push` v2: `PushResult.uploaded_bytes` ({u['lamina_v2']['uploaded_files']} files: "
             f"shard + manifest; {u['lamina_v2']['reused_files']} reused)", f"{lam / MB:.2f}",
             f"{lam / model * 100:.2f}%", "1.00"],
            [f"(cross-check) new bytes in the repository directory, revision and ref included "
             f"({u['repo_new_files']} files)", f"{u['repo_new_bytes'] / MB:.2f}",
             f"{u['repo_new_bytes'] / model * 100:.2f}%", ""]]
    for label, h in u["hf"].items():
        size = h["max_shard_size"]
        size = f'"{size}"' if isinstance(size, str) else f"{size / MB:.0f} MB (model x 5/13.48, as 5GB is to 7B bf16)"
        rows.append([f"HF `save_torch_state_dict`, max_shard_size={size}: "
                     f"{len(h['changed'])} of {len(h['files'])} files changed sha256",
                     f"{h['changed_bytes'] / MB:.2f}", f"{h['changed_bytes'] / model * 100:.2f}%",
                     f"{lam / h['changed_bytes']:.3f}"])
    table(["upload of v2", "MB", "% of model", "lamina / this"], rows)
    same = "exactly the measured value" if u["lamina_v2_computed"] == lam else f"measured: {lam}"
    lines.append(f"The same arithmetic as the 7B rows below gives lamina {u['lamina_v2_computed']} bytes for this "
                 f"model ({same}); "
                 f"computed HF file sizes matched the written files exactly. Push to a local repo: v1 "
                 f"{u['push_v1_s']:.2f} s, v2 {u['push_v2_s']:.2f} s.")
    lines.append("")
    m7 = u["llama7b"]
    lines.append(f"**1b. 7B bf16 Llama-style layout ({m7['params'] / 1e9:.2f} B parameters), computed, not measured** "
                 f"(HF: `split_torch_state_dict_into_shards` over meta tensors, 5GB; lamina: one shard per layer + "
                 f"manifest {m7['manifest_bytes'] / 1e3:.1f} kB)")
    lines.append("")
    rows = []
    for name, s in m7["scenarios"].items():
        rows.append([name, f"{s['lamina_bytes'] / 1e9:.3f} GB ({s['lamina_files']} files)",
                     f"{s['hf_bytes'] / 1e9:.3f} GB ({s['hf_files']} of {s['hf_total_files']} files)",
                     f"{s['lamina_bytes'] / s['hf_bytes']:.3f}"])
    table(["changed in v2", "lamina uploads", "HF 5GB-sharded uploads", "lamina / HF"], rows)

    rm_ = r["remote"]
    lat = rm_.get("latency_ms")
    la, an = rm_["layer"][LAYER_LAMINA], rm_["layer"][LAYER_ANCHOR]
    lines.append(f"**2. One layer over HTTP** (RangeHTTPServer on 127.0.0.1 in a child process; median of "
                 f"{len(la['s'])} lamina / {len(an['s'])} anchor calls, min–max; MB served = body bytes the server "
                 f"sent)")
    lines.append("")
    rows = []
    for key, note in (("layer", ""), ("layer_latency", f", +{lat:g} ms per request")):
        if key not in rm_:
            continue
        la, an = rm_[key][LAYER_LAMINA], rm_[key][LAYER_ANCHOR]
        rows.append([f"`{LAYER_LAMINA}`{note}", fmt_range(la["s"], 1e3), f"{max(la['bytes']) / MB:.2f}",
                     str(max(la["requests"])), f"{median(la['s']) / median(an['s']):.4f}",
                     f"{max(la['bytes']) / max(an['bytes']):.4f}"])
        rows.append([f"{LAYER_ANCHOR}{note}", fmt_range(an["s"], 1e3), f"{max(an['bytes']) / MB:.2f}",
                     str(max(an["requests"])), "1", "1"])
    table(["call", "ms", "MB served", "requests", "time vs anchor", "bytes vs anchor"], rows)
    if FULL_GET in rm_.get("full", {}):
        get = median(rm_["full"][FULL_GET]["s"])
        lines.append(f"For scale: the plain GET of the file alone (table 3) takes {get * 1e3:.0f} ms; the lamina "
                     f"call takes {median(rm_['layer'][LAYER_LAMINA]['s']) / get:.3f} of that.")
        lines.append("")

    lines.append(f"**3. Full load over HTTP** (median of {len(rm_['full'][FULL_GET]['s'])} shuffled rounds"
                 + (f", {len(rm_['full_latency'][FULL_GET]['s'])} with +{lat:g} ms per request" if lat else "")
                 + "; MB/s = model bytes / wall time)")
    lines.append("")
    rows = []
    for key, note in (("full", ""), ("full_latency", f", +{lat:g} ms per request")):
        if key not in rm_:
            continue
        fl = rm_[key]
        ref = model / median(fl[FULL_GET]["s"])
        for name, v in fl.items():
            rate = model / median(v["s"])
            rows.append([(f"`{name}`" if name.startswith("lamina") else name) + note, fmt_range(v["s"], 1, 3),
                         f"{rate / MB:.0f}", f"{max(v['bytes']) / MB:.1f}", str(max(v["requests"])),
                         f"{median(v['cpu']):.2f}", f"{median(v['server_cpu']):.2f}", f"{rate / ref:.2f}"])
    table(["call", "wall s", "MB/s", "MB served", "requests", "client CPU s", "server CPU s", "MB/s vs plain GET"],
          rows)
    lines.append(f"Server handler had `disable_nagle_algorithm = True` of its own: {rm_['nagle_disabled_by_server']}. "
                 f"Load average: start `{r['pressure_start']['loadavg']}`, end `{r['pressure_end']['loadavg']}`. "
                 f"Total wall time {r['wall_s']:.0f} s.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=512, help="model size in MB (default 512)")
    ap.add_argument("--out", type=Path, default=None, help="data directory (default: temp dir under bench/_data)")
    ap.add_argument("--layer-rounds", type=int, default=7, help="rounds of the one-layer read (default 7)")
    ap.add_argument("--full-rounds", type=int, default=5, help="rounds of the full remote load (default 5)")
    ap.add_argument("--latency-ms", type=float, default=20,
                    help="then repeat 2. and 3. with this delay before every answer (default 20; 0: skip)")
    ap.add_argument("--latency-rounds", type=int, default=3, help="rounds with the added latency (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the snapshots, repository and files")
    args = ap.parse_args()

    t_start = time.perf_counter()
    if args.out is None:
        (HERE / "_data").mkdir(exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="repo-remote-", dir=HERE / "_data"))
    else:
        out = args.out.resolve()
        out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "pressure_start": pressure()}
    log(f"machine: {results['machine']}")
    log(f"output: {out}")
    big = ["snap_v1", "snap_v2", "repo", "hf_5GB_v1", "hf_5GB_v2", "hf_7B-like_v1", "hf_7B-like_v2", "shrunk_7b"]
    try:
        sd1 = make_model(args.size_mb)
        sd2 = dict(sd1)
        # A fine-tuning-sized change to every element of one layer.
        bump = torch.randn(sd1[CHANGED_TENSOR].shape, generator=torch.Generator().manual_seed(1))
        sd2[CHANGED_TENSOR] = sd1[CHANGED_TENSOR] + 1e-3 * bump
        del bump
        model = nbytes(sd1)
        results["rows"] = sd1[CHANGED_TENSOR].shape[0]
        results["layer_bytes"] = sd1[CHANGED_TENSOR].numel() * 4
        log(f"model: {model / MB:.1f} MB, {len(sd1)} tensors; one layer {results['layer_bytes'] / MB:.2f} MB")
        # The "7B-like" HF variant: the shard/model size proportion of a 7B bf16 model at 5GB (5 / 13.48).
        shard3 = int(model * 5e9 / 13.48e9)

        log("1. uploads: save v1/v2, push both, write both HF layouts, compare")
        results["uploads"] = bench_uploads(sd1, sd2, out, shard3)
        u = results["uploads"]
        log(f"  lamina v2 uploaded {u['lamina_v2']['uploaded_bytes'] / MB:.2f} MB; HF 5GB "
            f"{u['hf']['5GB']['changed_bytes'] / MB:.2f} MB")
        del sd2

        log("2./3. remote reads over HTTP")
        results["remote"] = bench_remote(sd1, out, args.layer_rounds, args.full_rounds, args.latency_ms,
                                         args.latency_rounds)
    finally:
        if not args.keep:
            for name in big:
                rm(out / name)
    results["pressure_end"] = pressure()
    results["wall_s"] = time.perf_counter() - t_start
    table = report(results)
    print()
    print(table)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(table + "\n")
    log(f"done in {results['wall_s']:.0f} s; results in {out / 'results.json'} and results.md"
        + ("" if args.keep else " (big files removed)"))


if __name__ == "__main__":
    main()
