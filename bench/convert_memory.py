"""Peak memory of `lamina.convert` on a 2 GB torch checkpoint (issue: < 1 GB above baseline).

    python bench/convert_memory.py [--gb 2.0] [--out DIR]

Writes a bf16 state dict with torch.save, then converts it in a fresh process and reports that
process's peak RSS (VmHWM) minus its RSS after importing torch and lamina, plus RssFile/RssAnon.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import torch, lamina, lamina.converters.torch_pickle
def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out
base = status()["VmRSS"]
open("/proc/self/clear_refs", "w").write("5")
t = time.perf_counter()
lamina.convert(sys.argv[1], sys.argv[2], durable=False)
elapsed = time.perf_counter() - t
after = status()
art = lamina.open(sys.argv[2])
art.verify()
source = torch.load(sys.argv[1], mmap=True, weights_only=True)
assert all(torch.equal(art.tensor(k), v) for k, v in source.items()), "converted tensors differ"
print(json.dumps({"baseline": base, "peak": after["VmHWM"], "extra": after["VmHWM"] - base,
                  "rss_file_after": after["RssFile"], "rss_anon_after": after["RssAnon"], "seconds": elapsed}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    root = Path(tempfile.mkdtemp(prefix="convert-mem-", dir=args.out or Path(__file__).parent / "_data"))
    try:
        layer_bytes = 64 << 20  # 32 M bf16 values per tensor
        n = max(1, int(args.gb * 1e9 // layer_bytes))
        block = torch.randn(layer_bytes // 2, dtype=torch.float32).to(torch.bfloat16)
        sd = {f"blocks.{i}.proj.weight": block.view(4096, -1).clone() for i in range(n)}
        ckpt = root / "model.pt"
        torch.save(sd, ckpt)
        del sd, block
        size = ckpt.stat().st_size
        res = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), str(root / "snap")],
                             capture_output=True, text=True, check=True)
        stats = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"checkpoint: {size / 1e9:.2f} GB, {n} tensors of {layer_bytes >> 20} MiB")
        print(f"peak RSS above baseline: {stats['extra'] / 1e6:.0f} MB (target < 1000 MB: "
              f"{'MET' if stats['extra'] < 1e9 else 'MISSED'})")
        print("converted snapshot verified; every tensor equals the checkpoint's")
        print(f"after: RssFile {stats['rss_file_after'] / 1e6:.0f} MB, RssAnon {stats['rss_anon_after'] / 1e6:.0f} MB;"
              f" time {stats['seconds']:.1f} s ({size / stats['seconds'] / 1e9:.2f} GB/s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
