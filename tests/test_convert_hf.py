"""Hugging Face safetensors layouts in and out (lamina.converters.hf).

Every model here is a real ``transformers`` model with random weights from a tiny config, written by
``save_pretrained`` (single file, and sharded through ``max_shard_size``; tied and untied
embeddings), or a PEFT-style adapter directory written by hand. Expected values come from the
files themselves (parsed with lamina's strict header parser) and from the live models, never from
lamina's own output. Hub tests drive the real ``huggingface_hub`` client against the FakeHub of
tests/hub_server.py (fixture ``hub``).
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from cli_helpers import assert_clean_cli_error, cli, leftovers
from hub_server import FakeHub
from huggingface_hub import (
    constants,
    load_torch_model,
    split_torch_state_dict_into_shards,
)
from lamina.converters import hf
from lamina.converters._detect import destination_format, detect_source
from lamina.converters._hf_stream import Budget, MappedSource
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import lamina
from lamina._parallel import run_parallel
from lamina.format.shards import parse_header

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

EXTRAS = {  # files a hub repository carries beside the weights (contents made up, bytes checked exactly)
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}\n',
    "special_tokens_map.json": b'{"eos_token": "<eos>"}',
    "chat_template.jinja": b"{% for m in messages %}{{ m['content'] }}{% endfor %}",
    "README.md": "---\nlicense: mit\n---\n# tiny \u2014 a test model\n".encode(),
    "assets/nested/notes.txt": b"\x00\x01binary is fine\xff",
}


# ------------------------------------------------------------------------------------------ helpers
def gpt2(seed: int, tie: bool = True) -> GPT2LMHeadModel:
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=97, n_positions=64, bos_token_id=0,
                        eos_token_id=0, tie_word_embeddings=tie)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def llama(seed: int, tie: bool, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    config = LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=101, tie_word_embeddings=tie, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(dtype).eval()


def save_hf(model: torch.nn.Module, path: Path, extras: dict[str, bytes] = EXTRAS, **kwargs: object) -> Path:
    model.save_pretrained(path, **kwargs)
    for rel, data in extras.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return path


def raw(paths: list[Path]) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """Every tensor of these safetensors files: (dtype, shape, bytes), parsed independently of the converter."""
    out: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for path in paths:
        data = path.read_bytes()
        _, entries = parse_header(data, len(data), str(path))
        for name, e in entries.items():
            assert name not in out, name
            out[name] = (e.dtype, e.shape, data[e.begin:e.end])
    return out


def weights_of(directory: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    return raw(sorted(directory.rglob("*.safetensors")))


def metadata_of(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    return parse_header(data, len(data), str(path))[0]


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.name.endswith(".safetensors") and p.name != "model.safetensors.index.json"}


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, vocab: int) -> bool:
    tokens = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return torch.equal(a(tokens).logits, b(tokens).logits)


# ------------------------------------------------------------------------------------------ 1. in and out, single file
def test_gpt2_single_file_round_trip_is_byte_identical_and_loads_bitwise(tmp_path: Path) -> None:
    """HF directory -> lamina -> HF directory: identical tensor bytes, identical extra files,
    lm_head restored as an alias of wte and dropped again on the way out; from_pretrained on the
    result (and on the snapshot itself) gives bitwise equal logits."""
    model = gpt2(1)
    src = save_hf(model, tmp_path / "src")
    assert detect_source(src) == "hf"
    reports: list[str] = []
    art = lamina.convert(src, tmp_path / "snap", report=reports.append)
    art = lamina.open(art)
    assert art.aliases == {"lm_head.weight": "transformer.wte.weight"}
    assert "lm_head.weight" in reports[0]
    original = weights_of(src)
    assert "lm_head.weight" not in original
    assert raw(sorted((tmp_path / "snap" / "weights").glob("*.safetensors"))) == original
    record = art.info.extra["hf"]
    assert record["layout"] == "single" and record["metadata"] == {"model.safetensors": {"format": "pt"}}
    assert record["tied"] == {"lm_head.weight": "transformer.wte.weight"}
    assert art.info.name == "src"
    for rel in ("config.json", "generation_config.json", *EXTRAS):
        assert art.read_file(rel) == (src / rel).read_bytes(), rel
    with torch.no_grad():
        assert torch.equal(art.tensor("lm_head.weight"), model.lm_head.weight)

    snap_model = GPT2LMHeadModel.from_pretrained(tmp_path / "snap").eval()  # the snapshot loads as it is
    assert same_outputs(model, snap_model, 97)

    out = lamina.convert(tmp_path / "snap", tmp_path / "out", to_format="hf")
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not (out / "model.safetensors.index.json").exists()
    assert weights_of(out) == original
    assert files_of(out) == files_of(src)
    assert metadata_of(out / "model.safetensors") == {"format": "pt"}
    loaded = GPT2LMHeadModel.from_pretrained(out).eval()
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    assert same_outputs(model, loaded, 97)
    assert transformers.__version__


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_llama_bf16_tied_and_untied(tmp_path: Path, tie: bool) -> None:
    """Llama in bf16: a tied lm_head comes back as an alias of embed_tokens, an untied one is stored;
    the exported directory loads with from_pretrained and with huggingface_hub.load_torch_model."""
    model = llama(2, tie, torch.bfloat16)
    src = save_hf(model, tmp_path / "src", extras={})
    art = hf.to_lamina(src, tmp_path / "snap")
    assert art.aliases == ({"lm_head.weight": "model.embed_tokens.weight"} if tie else {})
    assert {t.dtype for t in art.manifest.tensors} == {"BF16"}
    out = hf.from_lamina(tmp_path / "snap", tmp_path / "out")
    assert weights_of(out) == weights_of(src)
    # the reference is the original directory loaded the same way (a bf16-cast live model keeps
    # its rotary buffers in bf16, from_pretrained in fp32)
    reference = LlamaForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
    loaded = LlamaForCausalLM.from_pretrained(out, dtype=torch.bfloat16).eval()
    assert same_outputs(reference, loaded, 101)
    assert (loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()) is tie
    fresh = llama(99, tie, torch.bfloat16)
    result = load_torch_model(fresh, out, strict=not tie)
    assert not result.unexpected_keys and (result.missing_keys == ["lm_head.weight"] if tie else True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------ 2. sharded
def test_sharded_directory_round_trip_and_shard_rule(tmp_path: Path) -> None:
    """A save_pretrained directory sharded at 20 KB converts (index metadata kept); exported with a
    shard size, the split is exactly huggingface_hub's split_torch_state_dict_into_shards."""
    model = gpt2(3)
    src = save_hf(model, tmp_path / "src", max_shard_size="20KB")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    art = hf.to_lamina(src, tmp_path / "snap")
    record = art.info.extra["hf"]
    assert record["layout"] == "sharded" and record["index_metadata"] == index["metadata"]
    assert sorted(record["weights"]) == sorted(set(index["weight_map"].values()))
    assert art.aliases == {"lm_head.weight": "transformer.wte.weight"}

    out = hf.from_lamina(art, tmp_path / "out", max_shard_size="30KB")
    written = json.loads((out / "model.safetensors.index.json").read_text())
    stored = art.state_dict()
    for alias in art.aliases:
        del stored[alias]
    expected = split_torch_state_dict_into_shards(stored, max_shard_size="30KB")
    assert written["weight_map"] == expected.tensor_to_filename
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(expected.filename_to_tensors)
    assert written["metadata"]["total_size"] == expected.metadata["total_size"]
    assert written["metadata"]["total_parameters"] == sum(t.numel() for t in stored.values())
    assert weights_of(out) == weights_of(src)
    assert files_of(out) == files_of(src)
    loaded = GPT2LMHeadModel.from_pretrained(out).eval()
    assert same_outputs(model, loaded, 97)


def test_snapshot_saved_from_a_torch_module_exports_like_save_pretrained(tmp_path: Path) -> None:
    """lamina.save(model) -> --to hf: the same shards and weight map as save_pretrained with the
    same max_shard_size, tied lm_head written once, and from_pretrained loads it bitwise."""
    model = gpt2(4)
    lamina.save(model, tmp_path / "snap", files={"config.json": model.config.to_dict()})
    out = lamina.convert(tmp_path / "snap", tmp_path / "out", to_format="hf", max_shard_size="25KB")
    reference = save_hf(model, tmp_path / "reference", extras={}, max_shard_size="25KB")
    ours = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    theirs = json.loads((reference / "model.safetensors.index.json").read_text())["weight_map"]
    assert ours == theirs
    assert weights_of(out) == weights_of(reference)
    for shard in out.glob("*.safetensors"):
        assert metadata_of(shard) == {"format": "pt"}
    assert same_outputs(model, GPT2LMHeadModel.from_pretrained(out).eval(), 97)


def test_single_safetensors_file_round_trips_byte_for_byte(tmp_path: Path) -> None:
    """One .safetensors file (with metadata of its own) -> lamina -> .safetensors: the same bytes."""
    tensors = {"enc.weight": torch.randn(8, 4), "enc.bias": torch.randn(8).to(torch.bfloat16),
               "steps": torch.tensor(3, dtype=torch.int64), "empty": torch.zeros(0, 3)}
    src = tmp_path / "m.safetensors"
    save_file(tensors, src, metadata={"format": "pt", "author": "test"})
    assert detect_source(src) == "safetensors" and destination_format("x.safetensors") == "safetensors"
    art = lamina.open(lamina.convert(src, tmp_path / "snap"))
    assert art.info.extra["hf"]["metadata"] == {"m.safetensors": {"format": "pt", "author": "test"}}
    assert art.info.extra["hf"]["layout"] == "file" and art.info.name == "m"
    back = lamina.convert(tmp_path / "snap", tmp_path / "back.safetensors")
    assert metadata_of(back) == {"format": "pt", "author": "test"} and raw([back]) == raw([src])
    # byte for byte: safetensors orders __metadata__ keys by hash (lamina sorts them), so compare a one-key file
    plain = tmp_path / "plain.safetensors"
    save_file(tensors, plain, metadata={"format": "pt"})
    lamina.convert(plain, tmp_path / "plain-snap")
    one = lamina.convert(tmp_path / "plain-snap", tmp_path / "one", to_format="safetensors")
    assert one.read_bytes() == plain.read_bytes()


# ------------------------------------------------------------------------------------------ 3. adapters, ties, files
def test_peft_adapter_directory_round_trip(tmp_path: Path) -> None:
    """adapter_model.safetensors + adapter_config.json with LoRA names -> lamina -> the same layout
    (no index, no sharding), identical tensors and config."""
    src = tmp_path / "adapter"
    src.mkdir()
    g = torch.Generator().manual_seed(5)
    lora = {}
    for i in range(2):
        for proj in ("q_proj", "v_proj"):
            base = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            lora[f"{base}.lora_A.weight"] = torch.randn(4, 32, generator=g)
            lora[f"{base}.lora_B.weight"] = torch.zeros(32, 4)
    save_file(lora, src / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
              "base_model_name_or_path": "tiny-llama", "task_type": "CAUSAL_LM"}
    (src / "adapter_config.json").write_text(json.dumps(config, indent=2))
    (src / "README.md").write_text("# adapter\n")
    assert detect_source(src) == "hf"
    art = hf.to_lamina(src, tmp_path / "snap")
    assert art.info.extra["hf"]["layout"] == "adapter" and art.aliases == {}
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A" in art.layers
    out = lamina.convert(tmp_path / "snap", tmp_path / "out", to_format="hf", max_shard_size="1KB")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert weights_of(out) == weights_of(src)
    assert json.loads((out / "adapter_config.json").read_text()) == config


def test_tied_option_overrides_config(tmp_path: Path) -> None:
    src = save_hf(gpt2(6), tmp_path / "src", extras={})
    assert lamina.open(lamina.convert(src, tmp_path / "none", tied=False)).aliases == {}
    explicit = {"lm_head.weight": "transformer.wte.weight", "head2.weight": "transformer.wpe.weight"}
    assert lamina.open(lamina.convert(src, tmp_path / "two", tied=explicit)).aliases == explicit
    with pytest.raises(lamina.FormatError, match="no tensor 'missing'"):
        lamina.convert(src, tmp_path / "bad", tied={"x": "missing"})
    with pytest.raises(lamina.FormatError, match="is stored in the files itself"):
        lamina.convert(src, tmp_path / "bad", tied={"transformer.wpe.weight": "transformer.wte.weight"})
    assert not (tmp_path / "bad").exists()


def _tiny_models() -> dict[str, torch.nn.Module]:
    t = transformers
    small = dict(vocab_size=50)
    return {
        "GPTNeoXForCausalLM": t.GPTNeoXForCausalLM(t.GPTNeoXConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                                                  intermediate_size=32, tie_word_embeddings=True, **small)),
        "OPTForCausalLM": t.OPTForCausalLM(t.OPTConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, ffn_dim=32,
                                                       word_embed_proj_dim=16, **small)),
        "BertForMaskedLM": t.BertForMaskedLM(t.BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                                          intermediate_size=32, **small)),
        "BertForSequenceClassification": t.BertForSequenceClassification(
            t.BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32, **small)),
        "T5ForConditionalGeneration": t.T5ForConditionalGeneration(t.T5Config(num_layers=1, d_model=16, num_heads=2,
                                                                              d_ff=32, d_kv=8, **small)),
        "T5EncoderModel": t.T5EncoderModel(t.T5Config(num_layers=1, d_model=16, num_heads=2, d_ff=32, d_kv=8, **small)),
        "BartForConditionalGeneration": t.BartForConditionalGeneration(t.BartConfig(
            encoder_layers=1, decoder_layers=1, d_model=16, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, **small)),
        "Qwen2ForCausalLM": t.Qwen2ForCausalLM(t.Qwen2Config(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                                             num_key_value_heads=1, intermediate_size=32,
                                                             tie_word_embeddings=True, **small)),
        "Qwen2ForSequenceClassification": t.Qwen2ForSequenceClassification(t.Qwen2Config(
            num_hidden_layers=1, hidden_size=16, num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
            tie_word_embeddings=True, pad_token_id=0, **small)),
    }


def test_tie_table_matches_what_save_pretrained_drops(tmp_path: Path) -> None:
    """For each architecture, the aliases lamina restores are exactly the state_dict names that
    save_pretrained left out, each pointing at the saved tensor sharing its memory."""
    torch.manual_seed(0)
    for arch, model in _tiny_models().items():
        path = save_hf(model, tmp_path / arch, extras={})
        saved = set(weights_of(path))
        state = model.state_dict()
        by_ptr: dict[int, list[str]] = {}
        for name, value in state.items():
            by_ptr.setdefault(value.data_ptr(), []).append(name)
        truth = {n: next(o for o in by_ptr[state[n].data_ptr()] if o in saved) for n in set(state) - saved}
        assert {r["name"]: r["tied_to"] for r in hf.describe(path) if r["tied_to"]} == truth, arch


def test_extra_files_other_weights_and_reserved_names(tmp_path: Path) -> None:
    """Every other file is carried byte for byte (subdirectories too); weights in other formats are
    skipped by default (and reported), carried with exclude=(); a file whose path lamina reserves
    is kept under hf/ and put back at its own path."""
    model = gpt2(7)
    extras = {**EXTRAS, "weights/README.txt": b"about the weights", "optimizer/notes.txt": b"not ours"}
    src = save_hf(model, tmp_path / "src", extras=extras)
    torch.save(model.state_dict(), src / "pytorch_model.bin")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert detect_source(src) == "hf"
    reports: list[str] = []
    art = hf.to_lamina(src, tmp_path / "snap", report=reports.append)
    assert "pytorch_model.bin" not in art.files and "pytorch_model.bin" in reports[0]
    assert art.info.extra["hf"]["skipped"] == ["pytorch_model.bin"]
    assert art.read_file("hf/weights/README.txt") == b"about the weights"
    assert art.read_file("hf/optimizer/notes.txt") == b"not ours"
    assert not any(f.startswith(".git") for f in art.files)
    out = hf.from_lamina(art, tmp_path / "out")
    assert files_of(out) == {k: v for k, v in files_of(src).items() if k != "pytorch_model.bin" and
                             not k.startswith(".git/")}
    everything = hf.to_lamina(src, tmp_path / "all", exclude=())
    assert everything.read_file("pytorch_model.bin") == (src / "pytorch_model.bin").read_bytes()


def test_describe_lists_tensors_from_headers(tmp_path: Path) -> None:
    src = save_hf(gpt2(8), tmp_path / "src", extras={}, max_shard_size="20KB")
    rows = hf.describe(src)
    by_name = {r["name"]: r for r in rows}
    files = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    assert {n for n, r in by_name.items() if not r["tied_to"]} == set(files)
    wte = by_name["transformer.wte.weight"]
    assert wte == {"name": "transformer.wte.weight", "layer": "transformer.wte", "dtype": "F32", "shape": [97, 32],
                   "nbytes": 97 * 32 * 4, "tied_to": None, "file": files["transformer.wte.weight"]}
    assert by_name["lm_head.weight"]["tied_to"] == "transformer.wte.weight"
    assert by_name["lm_head.weight"]["layer"] == "lm_head"


# ------------------------------------------------------------------------------------------ 4. streaming and memory
def _source(layer: str, budget: Budget) -> MappedSource:
    return MappedSource(layer, None, (), None, None, mapping=bytearray(16), begin=0, end=8, layer=layer, budget=budget)


def test_budget_bounds_the_layers_in_flight() -> None:
    """At most the budget's bytes are handed out at once across threads; a larger layer runs alone."""
    sizes = {f"l{i}": 10 for i in range(12)} | {"big": 50, "last": 10}
    budget = Budget(sizes, limit=25)
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def write(layer: str) -> None:
        source = _source(layer, budget)
        source.buffer()
        with lock:
            in_flight[0] += sizes[layer]
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.01)
        with lock:
            in_flight[0] -= sizes[layer]
        budget.after_shard([source])

    run_parallel(write, list(sizes), 4)
    assert peak[0] in (10, 20, 50)  # two 10s fit in 25, three do not; "big" (50) only ever runs alone


def test_budget_survives_a_write_that_fails_holding_its_lease() -> None:
    """A write that fails after taking its lease (no after_shard) cannot leave another thread
    waiting forever: once the failed job has left its thread's stack, its lease is dropped."""
    budget = Budget({"fail": 20, "waiter": 20}, limit=25)

    def write(layer: str) -> None:
        if layer == "waiter":
            time.sleep(0.2)  # the failing job takes its lease first
        source = _source(layer, budget)
        source.buffer()
        if layer == "fail":
            raise OSError("disk full")
        budget.after_shard([source])

    start = time.monotonic()
    with pytest.raises(OSError, match="disk full"):
        run_parallel(write, ["fail", "waiter"], 2)
    assert time.monotonic() - start < 5


def test_conversion_streams_from_the_mapped_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sources hand the writer views of the mapped file (no copies), each shard's pages are
    released after it is written, and the layers in flight never exceed the budget."""
    tensors = {f"blocks.{i}.w": torch.full((256, 256), float(i)) for i in range(8)}
    src = tmp_path / "m.safetensors"
    save_file(tensors, src, metadata={"format": "pt"})
    from lamina.converters import _hf_stream

    released: list[str] = []
    real_release = _hf_stream.release_pages
    monkeypatch.setattr(_hf_stream, "release_pages",
                        lambda sources: (released.extend(s.name for s in sources), real_release(sources)))
    monkeypatch.setattr(_hf_stream, "BUDGET_BYTES", 1)  # every layer alone
    views = []
    real_buffer = MappedSource.buffer
    monkeypatch.setattr(MappedSource, "buffer", lambda self: views.append(real_buffer(self)) or views[-1])
    art = hf.to_lamina(src, tmp_path / "snap")
    assert views and all(isinstance(v.obj, mmap.mmap) for v in views)
    assert set(released) >= set(tensors)
    for name, value in tensors.items():
        assert torch.equal(art.tensor(name), value)


# ------------------------------------------------------------------------------------------ 5. errors and CLI
def test_export_refuses_to_replace_other_directories_and_leaves_nothing(tmp_path: Path) -> None:
    lamina.save({"w": torch.ones(2)}, tmp_path / "snap")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("...")
    with pytest.raises(lamina.ExistsError, match="already exists"):
        hf.from_lamina(tmp_path / "snap", tmp_path / "precious")
    with pytest.raises(lamina.ExistsError, match="not a Hugging Face safetensors directory"):
        hf.from_lamina(tmp_path / "snap", tmp_path / "precious", overwrite=True)
    out = hf.from_lamina(tmp_path / "snap", tmp_path / "hfdir")
    lamina.save({"w": torch.zeros(2)}, tmp_path / "snap", overwrite=True)
    hf.from_lamina(tmp_path / "snap", out, overwrite=True)
    assert weights_of(out)["w"][2] == torch.zeros(2).numpy().tobytes()
    with pytest.raises(lamina.FormatError, match="max_shard_size"):
        hf.from_lamina(tmp_path / "snap", tmp_path / "x", max_shard_size="5 parsecs")
    assert leftovers(tmp_path) == [] and not (tmp_path / "x").exists()


def test_cli_convert_in_and_out(tmp_path: Path) -> None:
    src = save_hf(gpt2(9), tmp_path / "src", extras={})
    res = cli("convert", src, tmp_path / "snap")
    assert res.returncode == 0, res.stderr
    res = cli("convert", tmp_path / "snap", tmp_path / "out", "--to", "hf", "--max-shard-size", "30KB")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert weights_of(tmp_path / "out") == weights_of(src)
    res = cli("convert", src, tmp_path / "untied", "--tied", "none")
    assert res.returncode == 0 and lamina.open(tmp_path / "untied").aliases == {}
    res = cli("convert", tmp_path / "snap", tmp_path / "one.safetensors")
    assert res.returncode == 0 and set(raw([tmp_path / "one.safetensors"])) == set(weights_of(src))
    res = cli("convert", src, tmp_path / "nope", "--tied", "lm_head.weight=missing.weight")
    assert_clean_cli_error(res, lamina.FormatError, "missing.weight")


# ------------------------------------------------------------------------------------------ 6. the hub
def _publish(hub: FakeHub, directory: Path) -> str:
    repo_id = f"{FakeHub.USER}/hf-{uuid.uuid4().hex[:8]}"
    hub.create_repo(repo_id)
    hub.commit(repo_id, {p.relative_to(directory).as_posix(): p.read_bytes()
                         for p in directory.rglob("*") if p.is_file()})
    return repo_id


@pytest.mark.parametrize("shard", [None, "20KB"], ids=["single", "sharded"])
def test_hub_source_online_then_offline_from_the_cache(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       shard: str | None) -> None:
    model = gpt2(10)
    src = save_hf(model, tmp_path / "src", **({"max_shard_size": shard} if shard else {}))
    torch.save(model.state_dict(), src / "pytorch_model.bin")  # another format: never downloaded
    repo_id = _publish(hub, src)
    art = lamina.open(lamina.convert(f"hf://{repo_id}", tmp_path / "snap"))
    assert not any("pytorch_model.bin" in path for _, path, _, _ in hub.requests)
    assert raw(sorted((tmp_path / "snap" / "weights").glob("*.safetensors"))) == weights_of(src)
    record = art.info.extra["hf"]
    assert record["source"] == {"repo": repo_id, "revision": "main", "commit": hub.head(repo_id)}
    assert art.info.name == repo_id and art.aliases == {"lm_head.weight": "transformer.wte.weight"}
    for rel in EXTRAS:
        assert art.read_file(rel) == (src / rel).read_bytes()

    hub.reset()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    again = lamina.open(lamina.convert(f"hf://{repo_id}@{hub.head(repo_id)}", tmp_path / "offline"))
    assert hub.requests == []
    assert again.manifest.tensors == art.manifest.tensors
    out = lamina.convert(f"hf://{repo_id}", tmp_path / "out", to_format="hf")
    assert weights_of(out) == weights_of(src)
    assert same_outputs(model, GPT2LMHeadModel.from_pretrained(out).eval(), 97)


def test_hub_offline_with_a_cold_cache_fails_at_once(hub: FakeHub, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    repo_id = _publish(hub, save_hf(gpt2(11), tmp_path / "src", extras={}))
    hub.reset()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(lamina.NotFoundError) as raised:
        lamina.convert(f"hf://{repo_id}@main", tmp_path / "snap")
    assert time.monotonic() - start < 5
    message = str(raised.value)
    assert repo_id in message and "HF_HUB_OFFLINE" in message and "\n" not in message
    assert "local_files_only" not in message
    assert hub.requests == [] and not (tmp_path / "snap").exists()


def test_hub_repository_holding_a_lamina_snapshot_is_read_as_lamina(hub: FakeHub, tmp_path: Path) -> None:
    lamina.save({"enc.weight": torch.arange(6.0).reshape(2, 3)}, tmp_path / "snap")
    repo_id = f"{FakeHub.USER}/snap-{uuid.uuid4().hex[:8]}"
    lamina.push(tmp_path / "snap", f"hf://{repo_id}")
    assert detect_source(f"hf://{repo_id}") == "lamina"
    out = lamina.convert(f"hf://{repo_id}", tmp_path / "w.safetensors")
    assert raw([out])["enc.weight"][2] == torch.arange(6.0).numpy().tobytes()
    with pytest.raises(lamina.NotFoundError, match="not found"):
        lamina.convert(f"hf://{FakeHub.USER}/no-such-repo", tmp_path / "x")


def test_cli_hub_convert_online_and_offline(hub: FakeHub, tmp_path: Path) -> None:
    """The CLI in a subprocess (HF_ENDPOINT at the FakeHub): converts online; offline it converts
    from the cache, and a repository never downloaded fails with one line, fast."""
    repo_id = _publish(hub, save_hf(gpt2(12), tmp_path / "src", extras={}))
    cold = _publish(hub, save_hf(gpt2(13), tmp_path / "src2", extras={}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(hub.env(tmp_path / "home"))

    def run(*args: object, offline: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lamina", "convert", *map(str, args)], capture_output=True,
                              text=True, env={**env, **({"HF_HUB_OFFLINE": "1"} if offline else {})}, timeout=120)

    res = run(f"hf://{repo_id}", tmp_path / "a")
    assert res.returncode == 0, res.stderr
    res = run(f"hf://{repo_id}", tmp_path / "b", "--to", "hf", offline=True)
    assert res.returncode == 0, res.stderr
    assert weights_of(tmp_path / "b") == weights_of(tmp_path / "src")
    start = time.monotonic()
    res = run(f"hf://{cold}", tmp_path / "c", offline=True)
    assert time.monotonic() - start < 15  # a fresh interpreter included
    assert_clean_cli_error(res, lamina.NotFoundError, cold, "HF_HUB_OFFLINE")
    assert "local_files_only" not in res.stderr


def test_detection_order(tmp_path: Path) -> None:
    """A lamina snapshot is lamina although it carries an HF index; safetensors beat a
    pytorch_model.bin beside them; a lone .safetensors is a file source."""
    lamina.save({"w": torch.ones(2)}, tmp_path / "snap", files={"config.json": {"a": 1}})
    assert (tmp_path / "snap" / "model.safetensors.index.json").is_file()
    assert detect_source(tmp_path / "snap") == "lamina"
    both = save_hf(gpt2(14), tmp_path / "both", extras={})
    torch.save({"x": torch.ones(1)}, both / "pytorch_model.bin")
    assert detect_source(both) == "hf"
    (tmp_path / "odd.bin").write_bytes((both / "model.safetensors").read_bytes())
    assert detect_source(tmp_path / "odd.bin") == "safetensors"
    assert np.array_equal(lamina.open(lamina.convert(tmp_path / "odd.bin", tmp_path / "s")).tensor(
        "transformer.wte.weight", framework="np"), gpt2(14).transformer.wte.weight.detach().numpy())


@pytest.mark.parametrize("module", ["lamina.converters.hf", "lamina.converters._hf_ties"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
