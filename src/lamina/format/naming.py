"""Names: tensor -> layer, layer -> shard file name, and snapshot-relative path validation.

The rules are normative; see format_spec/spec.md, "Layers and shard file names".
"""

from __future__ import annotations

import hashlib

__all__ = ["default_layer", "encode_layer", "MAX_STEM_BYTES"]

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)]
)
MAX_STEM_BYTES = 160  # leaves room for ".safetensors" and directory names under common limits
_TRUNCATED_KEEP = 96


def default_layer(tensor_name: str) -> str:
    """The default layer of a tensor: its name without the last dotted component.

    >>> default_layer("encoder.layers.0.attn.q_proj.weight")
    'encoder.layers.0.attn.q_proj'
    >>> default_layer("logit_scale")
    'logit_scale'
    """
    head, dot, _ = tensor_name.rpartition(".")
    return head if dot else tensor_name


def encode_layer(layer: str) -> str:
    """The file stem for a layer: injective, safe on POSIX, macOS and Windows filesystems.

    Bytes outside ``[a-z0-9._-]`` of the UTF-8 name are written ``%XX`` (uppercase hex), so two
    names differing only in case still map to different, case-insensitively distinct stems.

    >>> encode_layer("blocks.0.attn")
    'blocks.0.attn'
    >>> encode_layer("Dense_1/kernel")
    '%44ense_1%2Fkernel'
    """
    if layer == "":
        return "%"  # a lone '%' is never produced by the escaping below
    out = []
    for i, byte in enumerate(layer.encode("utf-8")):
        ch = chr(byte)
        if ch in _PLAIN and not (i == 0 and ch == "."):  # no hidden files, no "." or ".."
            out.append(ch)
        else:
            out.append(f"%{byte:02X}")
    stem = "".join(out)
    if stem.split(".", 1)[0] in _WINDOWS_DEVICES:
        stem = f"%{ord(stem[0]):02X}{stem[1:]}"
    if len(stem) > MAX_STEM_BYTES:
        digest = hashlib.sha256(layer.encode("utf-8")).hexdigest()[:32]
        head = stem[:_TRUNCATED_KEEP]
        cut = head.rfind("%", len(head) - 2)  # do not split a %XX escape
        stem = f"{head[:cut] if cut != -1 else head}~{digest}"
    return stem




def decode_layer(stem: str) -> str | None:
    """The layer whose file stem is ``stem``, or None when the stem does not say (a hashed long
    name, or not a stem :func:`encode_layer` produces). Used to find a shard's layer record
    without decoding the others; callers confirm the result against the record.

    >>> decode_layer('%44ense_1%2Fkernel')
    'Dense_1/kernel'
    >>> decode_layer(encode_layer("x" * 400)) is None
    True
    """
    if stem == "%":
        return ""
    if "~" in stem:
        return None
    from urllib.parse import unquote_to_bytes

    try:
        return unquote_to_bytes(stem).decode("utf-8")
    except UnicodeDecodeError:
        return None
