"""``lamina inspect PATH --tensors``: every tensor of a snapshot, a .safetensors file or a Hugging
Face directory (single file, sharded with an index, or a PEFT adapter; ties from config.json), as
a table, tab-separated lines or JSON.

Expected rows are derived from the manifest, from the safetensors files themselves (read with
``safetensors.safe_open``) or from the model that wrote them, never from lamina's own listing.
"""

from __future__ import annotations

import io
import json
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import assert_clean_cli_error, cli
from click.testing import CliRunner
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import save_file

import lamina
from lamina.cli import cli as lamina_cli
from lamina.cli._render import render_tensors
from lamina.format.naming import default_layer
from lamina.snapshot import summary

KEYS = ["name", "layer", "dtype", "shape", "bytes", "file", "tied_to"]
DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64", torch.float16: "F16"}


def invoke(*args: str | Path) -> Any:
    result = CliRunner().invoke(lamina_cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def rows_json(*args: str | Path) -> list[dict[str, Any]]:
    return json.loads(invoke("inspect", *args, "--json").output)


def expected_from_files(root: Path, files: list[str]) -> list[dict[str, Any]]:
    """Rows read independently with safetensors' own reader."""
    rows = []
    for name in files:
        with safe_open(root / name, "pt") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                rows.append({"name": key, "layer": default_layer(key), "dtype": DTYPES[t.dtype],
                             "shape": list(t.shape), "bytes": t.numel() * t.element_size(), "file": name,
                             "tied_to": None})
    return rows


def hf_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {"model.embed.weight": torch.randn(10, 4, generator=g), "lm_scale": torch.tensor(2.0),
           "model.norm.weight": torch.ones(4, dtype=torch.bfloat16)}
    for i in (0, 1, 2, 10):
        out[f"model.layers.{i}.attn.weight"] = torch.randn(4, 4, generator=g)
        out[f"model.layers.{i}.attn.bias"] = torch.randn(4, generator=g).half()
    return out


def sharded_dir(root: Path) -> tuple[Path, list[str]]:
    """A Hugging Face layout: two shards and model.safetensors.index.json."""
    tensors = hf_tensors()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    root.mkdir()
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, root / shard, metadata={"format": "pt"})
        weight_map.update({k: shard for k in keys})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0},
                                                                   "weight_map": weight_map}))
    return root, list(shards)


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


# ------------------------------------------------------------------------------------------ snapshots
def test_json_lists_every_tensor_with_the_documented_schema(snapshot: Path) -> None:
    rows = rows_json(snapshot, "--tensors")
    manifest = lamina.open(snapshot).manifest
    assert all(list(r) == KEYS for r in rows)
    assert [r["name"] for r in rows] == lamina.open(snapshot).keys()
    for t in manifest.tensors:
        assert by_name(rows)[t.name] == {"name": t.name, "layer": t.layer, "dtype": t.dtype, "shape": list(t.shape),
                                         "bytes": t.nbytes, "file": t.file, "tied_to": None}
    (alias,) = manifest.aliases
    target = next(t for t in manifest.tensors if t.name == alias.target)
    assert by_name(rows)[alias.name] == {"name": "head.weight", "layer": "head", "dtype": target.dtype,
                                         "shape": list(target.shape), "bytes": target.nbytes, "file": target.file,
                                         "tied_to": "embed.weight"}


def test_filters_are_globs_over_names_and_imply_tensors(snapshot: Path) -> None:
    assert [r["name"] for r in rows_json(snapshot, "--filter", "bn.*")] == [
        "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert [r["name"] for r in rows_json(snapshot, "--tensors", "--filter", "*.bias", "--filter", "head.*")] == [
        "proj.bias", "norm.bias", "bn.bias", "head.weight"]
    assert [r["name"] for r in rows_json(snapshot, "--filter", "*running*")] == ["bn.running_mean", "bn.running_var"]
    assert rows_json(snapshot, "--filter", "BN.*") == []  # case-sensitive
    assert rows_json(snapshot, "--filter", "nothing") == []


def test_piped_output_is_tab_separated_with_a_header(snapshot: Path) -> None:
    res = cli("inspect", snapshot, "--tensors")  # a real pipe, as `| cut -f1` would see it
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split("\t") == ["name", "layer", "dtype", "shape", "bytes", "tied_to"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    assert len(rows) == len(lamina.open(snapshot).keys())
    assert rows["embed.weight"] == ["embed.weight", "embed", "F32", "16x8", "512", "-"]
    assert rows["head.weight"][5] == "embed.weight"
    assert rows["bn.num_batches_tracked"][3] == "scalar"
    assert "\x1b[" not in res.stdout and "│" not in res.stdout


def test_a_terminal_gets_a_table_with_full_names_and_a_total(snapshot: Path) -> None:
    rows = summary.tensor_rows(lamina.open(snapshot))
    long = {**rows[0], "name": "encoder.layers.11.self_attention.query_key_value.weight",
            "layer": "encoder.layers.11.self_attention.query_key_value"}
    for width in (120, 80, 60):
        out = io.StringIO()
        render_tensors([*rows, long], "snap", Console(file=out, force_terminal=True, width=width, color_system=None))
        text = out.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width  # nothing cut at the right edge
        if width < 80:
            continue  # narrow: still a table, columns shortened
        assert "┃" in text and "│ scalar │" in text and "12 tensors (1 tied)" in text
        stored = lamina.open(snapshot).manifest.tensors
        assert f"{sum(t.numel for t in stored) + 16 * 8:,} parameters" in text
        if width == 120:  # wide enough: names and ties in full, on one line
            assert "│ encoder.layers.11.self_attention.query_key_value.weight │" in text
            assert "-> embed.weight" in text and "16×8" in text
        assert "│ bn.running_mean " in text  # short names never fold


def test_any_location_lamina_opens_works(tmp_path: Path, tied_model: torch.nn.Module) -> None:
    lamina.Repo(tmp_path / "repo").save(tied_model, tag="v1")
    rows = rows_json(f"{tmp_path / 'repo'}@v1", "--filter", "embed.*")
    assert [r["name"] for r in rows] == ["embed.weight"] and rows[0]["file"].startswith("weights/")


# ------------------------------------------------------------------------------------------ foreign files
def test_a_tied_gpt2_directory_lists_the_tie_before_conversion(tmp_path: Path) -> None:
    """save_pretrained writes a tied GPT-2's embedding once; config.json says lm_head.weight is it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=11, n_positions=4, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    model.save_pretrained(tmp_path / "gpt2")
    rows = rows_json(tmp_path / "gpt2", "--tensors")
    stored = expected_from_files(tmp_path / "gpt2", ["model.safetensors"])
    assert "lm_head.weight" not in by_name(stored)  # transformers dropped it
    embed = by_name(stored)["transformer.wte.weight"]
    assert by_name(rows)["lm_head.weight"] == {**embed, "name": "lm_head.weight", "layer": "lm_head",
                                               "tied_to": "transformer.wte.weight"}
    assert sorted(rows, key=lambda r: r["name"]) == sorted([*stored, by_name(rows)["lm_head.weight"]],
                                                           key=lambda r: r["name"])
    lines = cli("inspect", tmp_path / "gpt2", "--filter", "lm_head.*").stdout.splitlines()
    assert lines[1:] == [f"lm_head.weight\tlm_head\tF32\t11x8\t{11 * 8 * 4}\ttransformer.wte.weight"]


def test_a_peft_adapter_directory(tmp_path: Path) -> None:
    (tmp_path / "adapter").mkdir()
    tensors = {"base_model.model.q_proj.lora_A.weight": torch.zeros(2, 8),
               "base_model.model.q_proj.lora_B.weight": torch.zeros(8, 2, dtype=torch.bfloat16)}
    save_file(tensors, tmp_path / "adapter" / "adapter_model.safetensors")
    (tmp_path / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 2}')
    assert rows_json(tmp_path / "adapter", "--tensors") == expected_from_files(
        tmp_path / "adapter", ["adapter_model.safetensors"])
    assert_clean_cli_error(cli("inspect", tmp_path / "adapter"), lamina.FormatError, "--tensors")


def test_a_safetensors_file_before_conversion(tmp_path: Path) -> None:
    save_file(hf_tensors(), tmp_path / "weights.safetensors")
    rows = rows_json(tmp_path / "weights.safetensors", "--tensors")
    want = expected_from_files(tmp_path, ["weights.safetensors"])
    assert sorted(rows, key=lambda r: r["name"]) == sorted(want, key=lambda r: r["name"])
    names = [r["name"] for r in rows]  # numbers compared as numbers
    assert names.index("model.layers.2.attn.bias") < names.index("model.layers.10.attn.bias")
    assert by_name(rows)["lm_scale"]["layer"] == "lm_scale" and by_name(rows)["lm_scale"]["shape"] == []


def test_a_hugging_face_directory_single_and_sharded(tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    save_file(hf_tensors(), single / "model.safetensors")
    (single / "config.json").write_text("{}")
    assert sorted(rows_json(single, "--tensors"), key=lambda r: r["name"]) == sorted(
        expected_from_files(single, ["model.safetensors"]), key=lambda r: r["name"])

    root, shards = sharded_dir(tmp_path / "sharded")
    rows = rows_json(root, "--filter", "model.layers.*.attn.*")
    want = [r for r in expected_from_files(root, shards) if r["name"].startswith("model.layers.")]
    assert sorted(rows, key=lambda r: r["name"]) == sorted(want, key=lambda r: r["name"])
    assert {r["file"] for r in rows_json(root, "--tensors")} == set(shards)


def test_foreign_headers_only_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_file({"big.weight": torch.zeros(512, 1024), "big.bias": torch.zeros(1024)}, tmp_path / "big.safetensors")
    size = (tmp_path / "big.safetensors").stat().st_size
    read: list[int] = []
    real = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        data = real(fd, n, offset)
        read.append(len(data))
        return data

    def no_mapping(*args: object, **kwargs: object) -> mmap.mmap:
        raise AssertionError("listing tensors must not map the file")

    monkeypatch.setattr(os, "pread", counting)
    monkeypatch.setattr(mmap, "mmap", no_mapping)
    assert len(rows_json(tmp_path / "big.safetensors", "--tensors")) == 2
    assert 0 < sum(read) < 1024 < size


def test_foreign_sources_need_tensors(tmp_path: Path) -> None:
    save_file(hf_tensors(), tmp_path / "w.safetensors")
    assert_clean_cli_error(cli("inspect", tmp_path / "w.safetensors"), lamina.FormatError, "--tensors")


def test_a_lamina_snapshot_with_an_hf_index_is_still_a_snapshot(snapshot: Path) -> None:
    assert (snapshot / "model.safetensors.index.json").exists()
    rows = by_name(rows_json(snapshot, "--tensors"))  # the manifest's rows, not the index's
    assert rows["head.weight"]["tied_to"] == "embed.weight" and rows["head.weight"]["file"].startswith("weights/")
    assert json.loads(invoke("inspect", snapshot, "--json").output)["info"]["name"] == "tied"


def test_bad_foreign_inputs_are_clean_errors(tmp_path: Path) -> None:
    root, shards = sharded_dir(tmp_path / "missing")
    (root / shards[1]).unlink()
    assert_clean_cli_error(cli("inspect", root, "--tensors"), lamina.NotFoundError, shards[1])

    root, shards = sharded_dir(tmp_path / "lying")
    index = json.loads((root / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.embed.weight"] = shards[1] if index["weight_map"]["model.embed.weight"] == shards[0] \
        else shards[0]
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_clean_cli_error(cli("inspect", root, "--tensors"), lamina.FormatError, "model.embed.weight",
                           "which the index maps to")

    root, _ = sharded_dir(tmp_path / "escaping")
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../x.safetensors"}}))
    assert_clean_cli_error(cli("inspect", root, "--tensors"), lamina.UnsafePathError, "../x.safetensors")

    (tmp_path / "notjson").mkdir()
    (tmp_path / "notjson" / "model.safetensors.index.json").write_text("{nope")
    assert_clean_cli_error(cli("inspect", tmp_path / "notjson", "--tensors"), lamina.FormatError, "not valid JSON")

    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    assert_clean_cli_error(cli("inspect", huge, "--tensors"), lamina.FormatError, "header")
