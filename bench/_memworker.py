"""Peak extra memory of one save or load, measured in a fresh process.

Usage: python bench/_memworker.py {save,load} METHOD PATH [--d-model N --n-blocks N --vocab N]

Builds the inputs (a state dict for save, a resident module for load), records VmRSS, resets VmHWM
through /proc/self/clear_refs, runs the one call, and prints one JSON line:
{"rss_before": bytes, "peak": bytes, "extra": peak - rss_before, "seconds": ...}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import safetensors.torch  # noqa: E402
import torch  # noqa: E402
from _common import Config, build_module, hwm, make_state_dict, reset_peak, rss  # noqa: E402

import lamina  # noqa: E402

SAVES = {
    "lamina_durable": lambda sd, p: lamina.save(sd, p, durable=True),
    "lamina_nondurable": lambda sd, p: lamina.save(sd, p, durable=False),
    "safetensors": lambda sd, p: safetensors.torch.save_file(sd, p),
    "torch": lambda sd, p: torch.save(sd, p),
}
LOADS = {
    "lamina": lambda m, p: lamina.open(p).load_into(m),
    "safetensors": lambda m, p: m.load_state_dict(safetensors.torch.load_file(p)),
    "torch": lambda m, p: m.load_state_dict(torch.load(p, weights_only=True)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["save", "load"])
    ap.add_argument("method")
    ap.add_argument("path")
    ap.add_argument("--d-model", type=int, required=True)
    ap.add_argument("--n-blocks", type=int, required=True)
    ap.add_argument("--vocab", type=int, required=True)
    a = ap.parse_args()
    cfg = Config(a.d_model, a.n_blocks, a.vocab)
    if a.kind == "save":
        subject, fn = make_state_dict(cfg), SAVES[a.method]
    else:
        subject, fn = build_module(cfg), LOADS[a.method]
    gc.collect()
    before = rss()
    reset_peak()
    t0 = time.perf_counter()
    result = fn(subject, a.path)
    seconds = time.perf_counter() - t0
    peak = hwm()
    del result
    print(json.dumps({"rss_before": before, "peak": peak, "extra": peak - before, "seconds": seconds}))


if __name__ == "__main__":
    main()
