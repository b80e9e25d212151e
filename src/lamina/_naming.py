"""Names: tensor -> layer, layer -> shard file name, and snapshot-relative path validation.

The rules are normative; see format_spec/spec.md, "Layers and shard file names".
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath, PureWindowsPath

from ._errors import UnsafePathError

__all__ = ["default_layer", "encode_layer", "check_relative_path", "MAX_COMPONENT_BYTES", "MAX_PATH_BYTES"]

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)]
)
MAX_COMPONENT_BYTES = 255  # NAME_MAX of common filesystems (ext4, APFS, NTFS counts UTF-16 units)
MAX_PATH_BYTES = 1024  # leaves room for the snapshot's own location under PATH_MAX (4096) and URLs
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


# Components of plain characters not starting with '.': certainly safe (no drive, no '..').
_OBVIOUSLY_SAFE = re.compile(r"[A-Za-z0-9_%~+=,@-][A-Za-z0-9._%~+=,@-]*(?:/[A-Za-z0-9_%~+=,@-][A-Za-z0-9._%~+=,@-]*)*")


def check_relative_path(path: object, where: object = "path") -> str:
    """Validate a snapshot-relative POSIX path and return it unchanged.

    Refuses absolute paths, drive letters, backslashes, empty components, ``.`` and ``..``, a
    component longer than 255 UTF-8 bytes and a path longer than 1024 (spec §2.2): such a path
    could never be opened, and the failure would otherwise surface later as a raw OSError.
    """
    if isinstance(path, str) and _OBVIOUSLY_SAFE.fullmatch(path):
        _check_lengths(path, where)
        return path
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"{where}: {path!r} is not a non-empty relative path")
    if "\\" in path or "\x00" in path or PureWindowsPath(path).drive or path.startswith("/"):
        raise UnsafePathError(f"{where}: {path!r} is absolute or uses '\\'; use a relative POSIX path")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePathError(f"{where}: {path!r} has an empty, '.' or '..' component")
    _check_lengths(path, where)
    return str(PurePosixPath(path))


def _check_lengths(path: str, where: object) -> None:
    if len(path) <= MAX_COMPONENT_BYTES // 4:  # fast path: no UTF-8 encoding can exceed the bounds
        return
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        raise UnsafePathError(f"{where}: {path[:80]!r}... is not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePathError(f"{where}: a path of {len(encoded)} bytes (longer than {MAX_PATH_BYTES}): "
                              f"{path[:80]!r}...")
    longest = max(path.split("/"), key=lambda part: len(part.encode("utf-8")))
    if len(longest.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise UnsafePathError(f"{where}: the path component {longest[:80]!r}... is "
                              f"{len(longest.encode('utf-8'))} bytes (longer than {MAX_COMPONENT_BYTES})")
