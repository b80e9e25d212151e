"""A lamina snapshot of a transformers model loads with transformers' own from_pretrained."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers  # a missing transformers must fail the suite, never skip it
from transformers import GPT2Config, GPT2LMHeadModel

import lamina


def _tiny_gpt2(seed: int) -> GPT2LMHeadModel:
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=97, n_positions=64,
                        bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def test_gpt2_snapshot_loads_with_from_pretrained(tmp_path: Path) -> None:
    """Tied embeddings stored once, the HF index names every stored tensor, and from_pretrained on
    the snapshot directory gives a model with identical weights (still tied) and identical logits."""
    model = _tiny_gpt2(seed=3)
    snapshot = tmp_path / "gpt2"
    art = lamina.save(model, snapshot, files={"config.json": model.config.to_dict()})
    assert art.aliases == {"lm_head.weight": "transformer.wte.weight"}

    loaded = GPT2LMHeadModel.from_pretrained(snapshot).eval()
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    tokens = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, loaded(tokens).logits)
    assert transformers.__version__  # the real library, not a stand-in


def test_gpt2_snapshot_from_a_repository_pull_loads(tmp_path: Path) -> None:
    """A snapshot that went through a lamina repository (push, pull) still loads with from_pretrained."""
    model = _tiny_gpt2(seed=4)
    lamina.save(model, tmp_path / "snap", files={"config.json": model.config.to_dict()})
    lamina.push(tmp_path / "snap", tmp_path / "repo", tag="v1")
    lamina.pull(f"{tmp_path / 'repo'}@v1", tmp_path / "pulled")
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path / "pulled").eval()
    tokens = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, loaded(tokens).logits)
