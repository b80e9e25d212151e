"""Shared pieces of the lamina benchmark: the synthetic transformer, data generation, memory probes.

Imported by ``bench/run.py`` and by the per-measurement subprocess ``bench/_memworker.py``.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

DTYPE = torch.bfloat16
MID_LAYER = "blocks.7.attn.q_proj"  # the layer read by the one-layer benchmark


# ----------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class Config:
    d_model: int = 1024
    n_blocks: int = 24
    vocab: int = 32000

    def scaled(self, blocks: float, vocab: float) -> Config:
        return Config(self.d_model, max(8, round(self.n_blocks * blocks)), max(256, round(self.vocab * vocab)))

    def args(self) -> list[str]:
        return [f"--d-model={self.d_model}", f"--n-blocks={self.n_blocks}", f"--vocab={self.vocab}"]

    def as_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)


class MLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.up_proj = nn.Linear(d, 4 * d, bias=False)
        self.down_proj = nn.Linear(4 * d, d, bias=False)


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = MLP(d)


class Transformer(nn.Module):
    """Weights only (no forward): embedding, n pre-LN blocks, final LayerNorm, untied lm_head."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg.d_model) for _ in range(cfg.n_blocks))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)


def build_module(cfg: Config) -> Transformer:
    """A bf16 module with resident, zeroed memory (built on meta: no slow random init)."""
    with torch.device("meta"):
        module = Transformer(cfg).to(DTYPE)
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()  # touch every page, so loads are not charged for first-touch page faults
    module.requires_grad_(False)
    return module


def shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = Transformer(cfg)
    return {n: tuple(t.shape) for n, t in module.state_dict().items()}


def make_state_dict(cfg: Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random bf16 tensors, one independent contiguous allocation each.

    ``torch.randn`` runs at ~0.1 GB/s on this machine, so the data is copied (at a pseudo-random
    offset per tensor) out of one 64 MiB block of ``randn`` values: incompressible-looking, realistic
    bf16 bit patterns, and generated at memcpy speed. No benchmarked code path compresses.
    """
    out = {name: torch.empty(shape, dtype=DTYPE) for name, shape in shapes(cfg).items()}
    fill_random(out.values(), seed)
    return out


def fill_random(tensors: Iterable[torch.Tensor], seed: int) -> None:
    """Fill contiguous tensors (any one floating dtype) with ``randn`` bit patterns copied out of one
    32M-element block at a pseudo-random offset per tensor (see :func:`make_state_dict`)."""
    tensors = list(tensors)
    if not tensors:
        return
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(32 << 20, dtype=tensors[0].dtype, generator=g)
    n_pool = pool.numel()
    with torch.no_grad():
        for i, t in enumerate(tensors):
            flat = t.view(-1)
            n = flat.numel()
            off = (i * 2_654_435_761) % n_pool
            pos = 0
            while pos < n:
                k = min(n - pos, n_pool - off)
                flat[pos : pos + k].copy_(pool[off : off + k])
                pos += k
                off = 0
    del pool
    gc.collect()


# ----------------------------------------------------------------------------------- GPT-2 (transformers)
GPT2_MID_LAYER = "transformer.h.7.attn.c_attn"  # weight + bias; the one-layer read for --model gpt2
GPT2_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class GPT2Spec:
    """A ``transformers.GPT2LMHeadModel``: GPT-2 small by default (12 layers, d=768, vocab 50257,
    124.4M parameters, ``lm_head.weight`` tied to ``transformer.wte.weight``)."""

    n_layer: int = 12
    vocab: int = 50257
    dtype: str = "f32"

    def scaled4(self) -> GPT2Spec:
        """4x the parameters at the same width: 4x the blocks and 4x the vocabulary (3.99x)."""
        return GPT2Spec(self.n_layer * 4, self.vocab * 4, self.dtype)

    def config(self):  # noqa: ANN201 (transformers is imported lazily)
        from transformers import GPT2Config

        return GPT2Config(n_layer=self.n_layer, vocab_size=self.vocab)

    def as_dict(self) -> dict:
        return asdict(self)


def gpt2_model(spec: GPT2Spec, seed: int | None = 0) -> nn.Module:
    """A GPT2LMHeadModel in ``spec.dtype``. ``seed``: transformers' own random init (normal(0, 0.02)
    weights, LayerNorm 1/0, zero biases; ~3 s for GPT-2 small), converted after init; None: built
    on meta, then resident memory filled with randn bit patterns (:func:`fill_random`; for the 4x
    model, whose init would take minutes). Either way wte and lm_head are one Parameter, tied by
    transformers (``tie_weights``)."""
    from transformers import GPT2LMHeadModel

    dtype = GPT2_DTYPES[spec.dtype]
    if seed is not None:
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(spec.config()).to(dtype)
    else:
        with torch.device("meta"):
            model = GPT2LMHeadModel(spec.config()).to(dtype)
        model = model.to_empty(device="cpu")
        model.tie_weights()  # to_empty off meta makes one Parameter per module: tie them again
        fill_random(unique_tensors(model.state_dict()).values(), 4)
    model.eval().requires_grad_(False)
    sd = model.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr(), "lm_head is not tied"
    return model


def gpt2_module(spec: GPT2Spec) -> nn.Module:
    """The load target: a GPT2LMHeadModel with resident, zeroed memory (built on meta, no init)."""
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        module = GPT2LMHeadModel(spec.config()).to(GPT2_DTYPES[spec.dtype])
    module = module.to_empty(device="cpu")
    module.tie_weights()  # to_empty off meta makes one Parameter per module: tie them again
    with torch.no_grad():
        for p in module.state_dict().values():
            p.zero_()
    module.eval().requires_grad_(False)
    sd = module.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr(), "lm_head is not tied"
    return module


def unique_tensors(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` with one name per group of tensors sharing memory, the first in state-dict order
    (GPT-2: ``transformer.wte.weight``; ``safetensors.torch.save_model`` keeps the alphabetically
    first, ``lm_head.weight``: the same bytes, stored once either way)."""
    seen: set[tuple[int, torch.dtype, tuple[int, ...]]] = set()
    out = {}
    for name, t in sd.items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            out[name] = t
    return out


def layer_bytes(sd: dict[str, torch.Tensor]) -> dict[str, int]:
    """Bytes per lamina layer (default layer function: the name minus its last component)."""
    out: dict[str, int] = {}
    for name, t in sd.items():
        layer = name.rpartition(".")[0] or name
        out[layer] = out.get(layer, 0) + t.numel() * t.element_size()
    return out


def total_bytes(sd: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


# ----------------------------------------------------------------------------------- memory
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss() -> int:
    return _status("VmRSS")


def hwm() -> int:
    return _status("VmHWM")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# ----------------------------------------------------------------------------------- timing
def median(xs: list[float]) -> float:
    return statistics.median(xs)


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fsync_path(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_all(path: str | os.PathLike[str]) -> int:
    """Read every file under ``path`` once (warms the page cache). Returns bytes read."""
    paths = [path] if os.path.isfile(path) else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    n = 0
    buf = bytearray(16 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while k := f.readinto(buf):
                n += k
    return n


def page_cache_ballast(path: str | os.PathLike[str], nbytes: int) -> None:
    """Write ``nbytes`` to a scratch file and delete it before it is written back (no disk I/O).

    On the reference VM, page cache that has to grow into memory nobody touched recently is ~10x
    slower to fill (host-side first-touch cost; the guest runs free-page reporting and DAMON
    pageout) than page cache recycled from just-freed pages. Running this (untimed) right before a
    timed write gives every method the same, recycled, memory to write into.
    """
    chunk = memoryview(bytearray(64 << 20))
    with open(path, "wb", buffering=0) as f:
        for _ in range(-(-nbytes // len(chunk))):
            f.write(chunk)
    os.remove(path)


def rm(path: str | os.PathLike[str]) -> None:
    import shutil

    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads, not children)."""
    t = os.times()
    return t.user + t.system


def timed_cpu(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    gc.collect()
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_seconds() - c0


def pressure() -> dict[str, str]:
    """Load average and CPU/IO pressure (PSI) lines, to judge how quiet the machine was."""
    out = {"loadavg": open("/proc/loadavg").read().strip()}
    for kind in ("cpu", "io", "memory"):
        try:
            out[f"psi_{kind}"] = open(f"/proc/pressure/{kind}").readline().strip()
        except OSError:
            pass
    return out
