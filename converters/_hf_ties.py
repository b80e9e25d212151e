"""Tied weights that transformers saved once, told from ``config.json`` alone (no model code).

``save_pretrained`` writes one tensor of each tied group and drops the others (its
``_tied_weights_keys``). Which names were dropped depends on the model class, so lamina keeps a
table, by the architecture ``config.json`` names, of the pairs (dropped name, kept name) — each
row checked against transformers 5 by saving a tiny random model of that class and comparing its
``state_dict()`` with the file. A pair marked ``word`` holds only when the config's
``tie_word_embeddings`` is true (absent counts as true, transformers' default); the others
(encoder and decoder embeddings of T5/BART, a masked-LM decoder bias) always hold.

A pair is applied only when the kept name is in the files and the dropped name is not, so a base
model or a classification head (whose names differ) never gains an alias. Any other
``*ForCausalLM`` architecture gets the Llama-style pair ``lm_head.weight`` -> ``model.embed_tokens.weight``
(Llama, Mistral, Qwen2, Gemma, Phi-3, ...). Anything else: pass ``tied=`` explicitly.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from lamina._errors import FormatError

__all__ = ["config_ties", "resolve_ties", "KNOWN_ARCHITECTURES"]

_WORD, _ALWAYS = "word", "always"
_GPT2 = ((_WORD, "lm_head.weight", "transformer.wte.weight"),)
_T5 = ((_ALWAYS, "encoder.embed_tokens.weight", "shared.weight"),
       (_ALWAYS, "decoder.embed_tokens.weight", "shared.weight"))
_BART = ((_ALWAYS, "model.encoder.embed_tokens.weight", "model.shared.weight"),
         (_ALWAYS, "model.decoder.embed_tokens.weight", "model.shared.weight"),
         (_WORD, "lm_head.weight", "model.shared.weight"))
_BERT = ((_WORD, "cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
         (_ALWAYS, "cls.predictions.decoder.bias", "cls.predictions.bias"))

#: architecture (``config.json`` "architectures") -> (when, dropped name, kept name), checked on transformers 5.
KNOWN_ARCHITECTURES: Mapping[str, tuple[tuple[str, str, str], ...]] = {
    "GPT2LMHeadModel": _GPT2,
    "GPTNeoForCausalLM": _GPT2,
    "GPTJForCausalLM": _GPT2,
    "GPTNeoXForCausalLM": ((_WORD, "lm_head.weight", "gpt_neox.embed_in.weight"),),
    "OPTForCausalLM": ((_WORD, "lm_head.weight", "model.decoder.embed_tokens.weight"),),
    "BloomForCausalLM": ((_WORD, "lm_head.weight", "transformer.word_embeddings.weight"),),
    "FalconForCausalLM": ((_WORD, "lm_head.weight", "transformer.word_embeddings.weight"),),
    "BertForMaskedLM": _BERT,
    "BertForPreTraining": _BERT,
    "RobertaForMaskedLM": ((_WORD, "lm_head.decoder.weight", "roberta.embeddings.word_embeddings.weight"),
                           (_ALWAYS, "lm_head.decoder.bias", "lm_head.bias")),
    "DistilBertForMaskedLM": ((_WORD, "vocab_projector.weight", "distilbert.embeddings.word_embeddings.weight"),),
    "T5ForConditionalGeneration": (*_T5, (_WORD, "lm_head.weight", "shared.weight")),
    "T5Model": _T5,
    "T5EncoderModel": (_T5[0],),
    "BartForConditionalGeneration": _BART,
}
_CAUSAL_LM = ((_WORD, "lm_head.weight", "model.embed_tokens.weight"),)


def config_ties(config: Mapping[str, Any] | None, names: Collection[str]) -> dict[str, str]:
    """``{dropped name: kept name}`` for the tied weights a transformers ``config.json`` implies,
    among tensor ``names`` (see the module docstring for the rules).

    Example:
        >>> config_ties({"architectures": ["LlamaForCausalLM"], "tie_word_embeddings": True},
        ...             ["model.embed_tokens.weight", "model.norm.weight"])
        {'lm_head.weight': 'model.embed_tokens.weight'}
    """
    if not isinstance(config, Mapping):
        return {}
    word = config.get("tie_word_embeddings", True) is True
    architectures = config.get("architectures")
    if not isinstance(architectures, list):
        return {}
    ties: dict[str, str] = {}
    for arch in architectures:
        if not isinstance(arch, str):
            continue
        rows = KNOWN_ARCHITECTURES.get(arch, _CAUSAL_LM if arch.endswith("ForCausalLM") else ())
        for when, dropped, kept in rows:
            if (when == _ALWAYS or word) and kept in names and dropped not in names:
                ties.setdefault(dropped, kept)
    return ties


def resolve_ties(tied: Mapping[str, str] | bool | None, config: Mapping[str, Any] | None,
                 names: Collection[str], where: str) -> dict[str, str]:
    """The aliases to record: from ``config`` (``tied=None``), none (``tied=False``), or exactly
    the ``{alias: stored tensor}`` pairs given (each checked against ``names``)."""
    if tied is None or tied is True:
        return config_ties(config, names)
    if tied is False:
        return {}
    if not isinstance(tied, Mapping):
        raise FormatError(f"tied must be a mapping {{alias: stored tensor}}, True/None (from config.json) or False, "
                          f"got {type(tied).__name__}")
    out: dict[str, str] = {}
    for alias, target in tied.items():
        if not isinstance(alias, str) or not isinstance(target, str) or not alias:
            raise FormatError(f"tied: {alias!r} -> {target!r} must be two tensor names")
        if target not in names:
            raise FormatError(f"{where}: tied {alias!r} -> {target!r}: no tensor {target!r} in the files")
        if alias in names:
            raise FormatError(f"{where}: tied {alias!r} -> {target!r}: {alias!r} is stored in the files itself")
        out[alias] = target
    return out
