"""Peak memory of Hugging Face directory conversions, both ways (issue 12: peak RSS at most the
largest tensor + 64 MB).

    python bench/hf_convert_memory.py [--gb 2.1] [--uniform] [--budget-mb MB] [--out DIR] [--keep]
    python bench/hf_convert_memory.py --gb 0.3        # bounded form: ~20 s, ~1 GB of disk

Writes a Llama-shaped bf16 model (hidden 2048, MLP 5632, vocab 32000, untied lm_head, as many
decoder blocks as --gb asks for; with --uniform, equal 128 MiB tensors instead) as a sharded Hugging Face directory with huggingface_hub's
``save_torch_state_dict`` (1 GB shards + index), then in a fresh process:

1. ``lamina.convert(hf_dir, snapshot)``: HF directory -> lamina snapshot;
2. ``lamina.convert(snapshot, out, to_format="hf", max_shard_size="1GB")``: back to an HF directory.

For each call the child records VmRSS, resets VmHWM (``/proc/self/clear_refs``), makes the call,
and reports VmHWM minus that RSS ("extra"). The parent then checks every tensor of the snapshot and
of the exported directory against the source bytes (sha256 per tensor).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import lamina, lamina.converters.hf, huggingface_hub
from lamina.converters import _hf_stream
if sys.argv[4] != "default":
    _hf_stream.BUDGET_BYTES = int(sys.argv[4])
def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out
results = {}
for step, call in (("to_lamina", lambda: lamina.convert(sys.argv[1], sys.argv[2], durable=False)),
                   ("from_lamina", lambda: lamina.convert(sys.argv[2], sys.argv[3], to_format="hf",
                                                          max_shard_size="1GB"))):
    base = status()["VmRSS"]
    open("/proc/self/clear_refs", "w").write("5")
    t = time.perf_counter()
    call()
    seconds = time.perf_counter() - t
    after = status()
    results[step] = {"baseline": base, "peak": after["VmHWM"], "extra": after["VmHWM"] - base, "seconds": seconds,
                     "rss_file_after": after["RssFile"], "rss_anon_after": after["RssAnon"]}
print(json.dumps(results))
"""

MiB = 1 << 20


def build(root: Path, gb: float, uniform: bool) -> tuple[Path, int, int, int]:
    """The HF directory; returns (path, total bytes, tensors, largest tensor bytes). ``uniform``:
    instead of the Llama shapes, equal 128 MiB tensors, one per layer (every layer is the largest)."""
    import torch
    from huggingface_hub import save_torch_state_dict

    hidden, mlp, vocab = 2048, 5632, 32000
    per_block = 2 * (4 * hidden * hidden + 3 * hidden * mlp + 2 * hidden)
    blocks = max(1, round((gb * 1e9 - 2 * 2 * vocab * hidden) / per_block))
    pool = torch.randn(32 * MiB, dtype=torch.float32).to(torch.bfloat16)  # 64 MiB of random bf16 bit patterns

    offsets = iter(range(0, 1 << 62, 7919))

    def tensor(*shape: int) -> torch.Tensor:
        """Fresh memory filled from the pool, starting somewhere else each time."""
        need, pos, parts = math.prod(shape), next(offsets) % pool.numel(), []
        while need:
            take = min(need, pool.numel() - pos)
            parts.append(pool[pos:pos + take])
            need, pos = need - take, 0
        return torch.cat(parts).view(*shape)

    sd = {"model.embed_tokens.weight": tensor(vocab, hidden)}
    if uniform:
        sd = {f"blocks.{i}.proj.weight": tensor(8192, 8192) for i in range(max(1, round(gb * 1e9 / (128 * MiB))))}
        blocks = 0
    for i in range(blocks):
        p = f"model.layers.{i}"
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[f"{p}.self_attn.{name}.weight"] = tensor(hidden, hidden)
        sd[f"{p}.mlp.gate_proj.weight"] = tensor(mlp, hidden)
        sd[f"{p}.mlp.up_proj.weight"] = tensor(mlp, hidden)
        sd[f"{p}.mlp.down_proj.weight"] = tensor(hidden, mlp)
        sd[f"{p}.input_layernorm.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
        sd[f"{p}.post_attention_layernorm.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
    if not uniform:
        sd["model.norm.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
        sd["lm_head.weight"] = tensor(vocab, hidden)
    path = root / "hf"
    path.mkdir()
    save_torch_state_dict(sd, path, max_shard_size="1GB")
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": mlp, "num_hidden_layers": blocks, "vocab_size": vocab, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16"}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    sizes = [t.numel() * t.element_size() for t in sd.values()]
    return path, sum(sizes), len(sizes), max(sizes)


def digests(paths: list[Path]) -> dict[str, str]:
    """sha256 of every tensor's bytes in these safetensors files (read through a memory map)."""
    import mmap
    import struct

    out = {}
    for path in paths:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            (n,) = struct.unpack("<Q", m[:8])
            header = json.loads(m[8:8 + n])
            header.pop("__metadata__", None)
            for name, info in header.items():
                begin, end = info["data_offsets"]
                out[name] = hashlib.sha256(m[8 + n + begin:8 + n + end]).hexdigest()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.1, help="model size in GB (default 2.1)")
    parser.add_argument("--out", type=Path, help="data directory (default: a new one under bench/_data/)")
    parser.add_argument("--keep", action="store_true", help="keep the model files")
    parser.add_argument("--uniform", action="store_true",
                        help="equal 128 MiB tensors, one per layer, instead of the Llama shapes")
    parser.add_argument("--budget-mb", type=float,
                        help="override the converter's byte budget across writer threads (investigation)")
    args = parser.parse_args()
    base = args.out or Path(__file__).parent / "_data"
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="hf-convert-mem-", dir=base))
    try:
        src, total, count, largest = build(root, args.gb, args.uniform)
        budget = "default" if args.budget_mb is None else str(int(args.budget_mb * 1e6))
        res = subprocess.run([sys.executable, "-c", CHILD, str(src), str(root / "snap"), str(root / "out"), budget],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(res.stderr)
        stats = json.loads(res.stdout.strip().splitlines()[-1])
        target = largest + 64_000_000
        shards = sorted(src.glob("*.safetensors"))
        print(f"model: {total / 1e9:.3f} GB bf16, {count} tensors in {len(shards)} shards; largest tensor "
              f"{largest / 1e6:.1f} MB; target: peak extra RSS <= largest + 64 MB = {target / 1e6:.1f} MB")
        for step in ("to_lamina", "from_lamina"):
            s = stats[step]
            verdict = "MET" if s["extra"] <= target else "MISSED"
            print(f"{step:12s} peak RSS above baseline {s['extra'] / 1e6:7.1f} MB ({verdict}); baseline "
                  f"{s['baseline'] / 1e6:.0f} MB; {s['seconds']:.1f} s ({total / s['seconds'] / 1e9:.2f} GB/s); after: "
                  f"RssFile {s['rss_file_after'] / 1e6:.0f} MB, RssAnon {s['rss_anon_after'] / 1e6:.0f} MB")
        expected = digests(shards)
        assert digests(sorted((root / "snap" / "weights").glob("*.safetensors"))) == expected, "snapshot differs"
        assert digests(sorted((root / "out").glob("*.safetensors"))) == expected, "exported directory differs"
        print(f"checked: all {len(expected)} tensors of the snapshot and of the exported directory equal the source")
        print(json.dumps({"total_bytes": total, "tensors": count, "largest_tensor": largest, **stats}))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
