"""Layer -> shard file name rule (spec §3.2) and relative path validation (§2.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lamina
from lamina.format.naming import default_layer, encode_layer
from lamina.storage.paths import check_relative_path


@pytest.mark.parametrize("layer, stem", [
    ("blocks.0.attn", "blocks.0.attn"), ("Dense_1/kernel", "%44ense_1%2Fkernel"), (".hidden", "%2Ehidden"),
    ("..", "%2E."), ("con", "%63on"), ("nul.weight", "%6Eul.weight"), ("console", "console"), ("", "%"),
    ("50%", "50%25"), ("é", "%C3%A9"), ("a b", "a%20b"),
])
def test_examples(layer: str, stem: str) -> None:
    assert encode_layer(layer) == stem


def test_default_layer() -> None:
    assert default_layer("a.b.c") == "a.b" and default_layer("scale") == "scale" and default_layer(".w") == ""


def test_long_names_are_bounded_and_still_distinct() -> None:
    a, b = "x" * 300 + "A", "x" * 300 + "B"
    assert len(encode_layer(a)) <= 160 and encode_layer(a) != encode_layer(b) and "~" in encode_layer(a)
    escaped = "%" * 100  # escapes must not be cut in half
    stem = encode_layer(escaped)
    assert stem.split("~")[0].endswith("25")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=2, max_size=2, unique=True))
def test_injective_even_on_case_insensitive_filesystems(names: list[str]) -> None:
    a, b = (encode_layer(n) for n in names)
    assert a.lower() != b.lower()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_stems_are_filesystem_safe(name: str) -> None:
    stem = encode_layer(name)
    assert stem and not stem.startswith(".") and len(stem) <= 160
    assert all(c.isascii() and (c.isalnum() or c in "._-%~") for c in stem)
    check_relative_path(f"weights/{stem}.safetensors")


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "..", "./a", "a//b", "C:/x", "a\\b", "a/\x00"])
def test_unsafe_paths_are_refused(bad: str) -> None:
    with pytest.raises(lamina.UnsafePathError):
        check_relative_path(bad)
