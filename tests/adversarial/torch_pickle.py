"""Adversarial cases: torch_pickle. See tests/adversarial/__init__.py for the shape of a case.

Every input starts from a real ``torch.save`` checkpoint (root folder ``m/``), then is re-zipped
with an extra or renamed entry, or has bytes patched where ``zipfile`` cannot write the lie (a
local header naming another entry, two entries sharing bytes). torch itself loads most of these
without a word, reading one of two copies or ignoring entries outside its folder: other zip
readers see a different checkpoint, so the converter refuses them as ambiguous. The optimizer
cases are real training checkpoints whose param groups cannot be matched to the model's
parameters without guessing.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lamina

from . import Case

__all__ = ["CASES", "real_checkpoint", "rezip"]

Target = tuple[Path, Path]  # (source file, destination snapshot)


def real_checkpoint(path: Path, seed: int = 0) -> Path:
    """A real state dict saved by torch (three storages: m/data/0, m/data/1, m/data/2)."""
    import torch

    torch.manual_seed(seed)
    torch.save({"fc.weight": torch.randn(4, 3), "fc.bias": torch.randn(4), "scale": torch.randn(4)}, path)
    return path


def rezip(src: Path, dst: Path, extra: Sequence[tuple[str, bytes]] = (),
          first: Sequence[tuple[str, bytes]] = ()) -> Path:
    """``src``'s entries stored again in ``dst``, ``first`` before them and ``extra`` after them;
    duplicate names are written as given (zipfile warns, but writes them)."""
    with zipfile.ZipFile(src) as zf:
        entries = [(i.filename, zf.read(i)) for i in zf.infolist()]
    with warnings.catch_warnings(), zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        warnings.simplefilter("ignore")  # "Duplicate name": the point of some cases
        for name, data in [*first, *entries, *extra]:
            out.writestr(name, data)
    return dst


def _entry(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def _zip_case(edit: Callable[[Path, Path], Path]) -> Callable[[Path], Target]:
    def build(tmp: Path) -> Target:
        (tmp / "base").mkdir()
        return edit(real_checkpoint(tmp / "base" / "m.pt"), tmp / "m.pt"), tmp / "snap"
    return build


def _convert(target: Target) -> object:
    return lamina.convert(target[0], target[1], from_format="torch")


# ------------------------------------------------------------------------ ambiguous archives
def _duplicate_storage(base: Path, out: Path) -> Path:
    """A second m/data/0 with other values: torch loads the second copy, a scanner the first."""
    return rezip(base, out, extra=[("m/data/0", bytes(len(_entry(base, "m/data/0"))))])


def _duplicate_pickle(base: Path, out: Path) -> Path:
    """A second m/data.pkl from another real checkpoint with the same storage keys."""
    (out.parent / "other").mkdir()
    other = real_checkpoint(out.parent / "other" / "m.pt", seed=1)
    return rezip(base, out, extra=[("m/data.pkl", _entry(other, "m/data.pkl"))])


def _duplicate_byteorder(base: Path, out: Path) -> Path:
    return rezip(base, out, extra=[("m/byteorder", b"big")])


def _second_folder(base: Path, out: Path) -> Path:
    """other/data.pkl next to m/: torch reads only the first entry's folder."""
    return rezip(base, out, extra=[("other/data.pkl", _entry(base, "m/data.pkl"))])


def _top_level_entry(base: Path, out: Path) -> Path:
    return rezip(base, out, extra=[("byteorder", b"big")])


def _first_entry_not_in_folder(base: Path, out: Path) -> Path:
    return rezip(base, out, first=[("data.pkl", _entry(base, "m/data.pkl"))])


def _dotdot_entry(base: Path, out: Path) -> Path:
    return rezip(base, out, extra=[("m/../evil/data.pkl", _entry(base, "m/data.pkl"))])


def _absolute_entry(base: Path, out: Path) -> Path:
    return rezip(base, out, extra=[("/m/data/7", b"\x00" * 16)])


def _local_name_differs(base: Path, out: Path) -> Path:
    """m/data/1's local header says m/data/9 (same length): a streaming reader sees m/data/9."""
    rezip(base, out)
    data = bytearray(out.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        offset = zf.getinfo("m/data/1").header_offset
    assert data[offset + 30 : offset + 38] == b"m/data/1"
    data[offset + 30 : offset + 38] = b"m/data/9"
    out.write_bytes(bytes(data))
    return out


def _central_records(data: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """(offset, name) of each central directory record from ``start``."""
    offset = start
    while data[offset : offset + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack("<3H", data[offset + 28 : offset + 34])
        yield offset, data[offset + 46 : offset + 46 + name_len]
        offset += 46 + name_len + extra_len + comment_len


def _overlapping_entries(base: Path, out: Path) -> Path:
    """m/data/2's directory record points at a complete local header hidden inside the bytes of
    another entry, m/pad: the two entries share bytes (one's data holds the other)."""
    payload = _entry(base, "m/data/2")
    name = b"m/data/2"
    hidden = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zipfile.crc32(payload), len(payload),
                         len(payload), len(name), 0) + name + payload
    rezip(base, out, extra=[("m/pad", hidden)])
    data = bytearray(out.read_bytes())
    with zipfile.ZipFile(out) as zf:
        pad = zf.getinfo("m/pad")
        hidden_at = pad.header_offset + 30 + len(pad.orig_filename) + len(pad.extra)
        (record,) = [at for at, n in _central_records(bytes(data), zf.start_dir) if n == name]
    data[record + 42 : record + 46] = struct.pack("<L", hidden_at)  # relative offset of local header
    out.write_bytes(bytes(data))
    return out


def _after_a_legacy_pickle(base: Path, out: Path) -> Path:
    """A legacy (pre-zip) checkpoint with a zip checkpoint appended: torch.load reads the legacy
    pickle (it looks at the first bytes), zip readers find the archive (they look at the end)."""
    import torch

    torch.save({"fc.weight": torch.ones(4, 3)}, out, _use_new_zipfile_serialization=False)
    out.write_bytes(out.read_bytes() + base.read_bytes())
    return out


def _empty_archive(base: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w"):
        pass
    return out


# ------------------------------------------------------------------------ optimizer groups
def _training_checkpoint(tmp: Path, build: Callable[[Any], Any], freeze: Callable[[Any], None] | None = None,
                         steps: int = 2) -> Target:
    """A real model trained ``steps`` steps with the optimizer ``build(model)``, saved as
    ``{"model", "optimizer"}``."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    if freeze is not None:
        freeze(model)
    opt = build(model)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        opt.zero_grad()
        model(torch.randn(5, 6, generator=g)).square().mean().backward()
        opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp / "ckpt.pt")
    return tmp / "ckpt.pt", tmp / "snap"


def _decay_biases_only(tmp: Path) -> Target:
    """The "no decay for biases" recipe: LayerNorm weights ([8]) decay, biases ([8]) do not, so a
    norm's weight and its bias fit either group."""
    import torch

    return _training_checkpoint(tmp, lambda m: torch.optim.AdamW(
        [{"params": [p for n, p in m.named_parameters() if not n.endswith("bias")], "weight_decay": 0.1},
         {"params": [p for n, p in m.named_parameters() if n.endswith("bias")], "weight_decay": 0.0}], lr=1e-2))


def _frozen_norm(tmp: Path) -> Target:
    """One group over everything but the first LayerNorm: which two [8] vectors are frozen?"""
    import torch

    def freeze(m: Any) -> None:
        m[1].requires_grad_(False)

    return _training_checkpoint(tmp, lambda m: torch.optim.Adam([p for p in m.parameters() if p.requires_grad]),
                                freeze=freeze)


def _stateless_groups(tmp: Path) -> Target:
    """Plain SGD keeps no state: nothing says which parameter is in which of its groups."""
    import torch

    return _training_checkpoint(tmp, lambda m: torch.optim.SGD(
        [{"params": [p for p in m.parameters() if p.dim() > 1]},
         {"params": [p for p in m.parameters() if p.dim() == 1], "lr": 0.5}], lr=0.1))


def _search_bomb(tmp: Path) -> Target:
    """A forged optimizer: 6 groups over 300 same-shape parameters whose last item fits nothing,
    so every interleaving is a dead end discovered at the very end."""
    import torch

    model = {f"p{i}": torch.zeros(2) for i in range(300)}
    groups = [{"params": list(range(40 * g, 40 * g + 40)), "lr": 0.1} for g in range(6)]
    state = {239: {"momentum_buffer": torch.zeros(3)}}
    torch.save({"model": model, "optimizer": {"state": state, "param_groups": groups}}, tmp / "ckpt.pt")
    return tmp / "ckpt.pt", tmp / "snap"


CASES: list[Case] = [
    Case("torch_zip_duplicate_storage", _zip_case(_duplicate_storage), _convert, lamina.FormatError,
         r"'m/data/0' appears twice"),
    Case("torch_zip_duplicate_data_pkl", _zip_case(_duplicate_pickle), _convert, lamina.FormatError,
         r"'m/data\.pkl' appears twice"),
    Case("torch_zip_duplicate_byteorder", _zip_case(_duplicate_byteorder), _convert, lamina.FormatError,
         r"'m/byteorder' appears twice"),
    Case("torch_zip_second_folder", _zip_case(_second_folder), _convert, lamina.FormatError,
         r"'other/data\.pkl' is outside the folder 'm/'"),
    Case("torch_zip_top_level_entry", _zip_case(_top_level_entry), _convert, lamina.FormatError,
         r"'byteorder' is outside the folder 'm/'"),
    Case("torch_zip_first_entry_not_in_folder", _zip_case(_first_entry_not_in_folder), _convert,
         lamina.FormatError, r"'data\.pkl' is not in a folder"),
    Case("torch_zip_dotdot_entry", _zip_case(_dotdot_entry), _convert, lamina.UnsafePathError,
         r"zip entry: 'm/\.\./evil/data\.pkl'"),
    Case("torch_zip_absolute_entry", _zip_case(_absolute_entry), _convert, lamina.UnsafePathError,
         r"zip entry: '/m/data/7' is absolute"),
    Case("torch_zip_local_header_names_another_entry", _zip_case(_local_name_differs), _convert,
         lamina.FormatError, r"'m/data/1' is named b'm/data/9' in its local header"),
    Case("torch_zip_overlapping_entries", _zip_case(_overlapping_entries), _convert, lamina.FormatError,
         r"zip entries 'm/(data/0|pad)' and 'm/data/2' overlap"),
    Case("torch_zip_after_a_legacy_pickle", _zip_case(_after_a_legacy_pickle), _convert, lamina.FormatError,
         r"\d+ bytes come before the first zip entry"),
    Case("torch_zip_empty_archive", _zip_case(_empty_archive), _convert, lamina.FormatError, r"empty zip archive"),
    Case("torch_optimizer_groups_ambiguous", _decay_biases_only, _convert, lamina.StateMismatchError,
         r"differ on '2\.bias' \(group 0 or group 1\), '3\.weight' \(group 1 or group 0\); .*param_names"),
    Case("torch_optimizer_frozen_parameters_ambiguous", _frozen_norm, _convert, lamina.StateMismatchError,
         r"'1\.weight' \(not in the optimizer or group 0\)|'1\.weight' \(group 0 or not in the optimizer\)"),
    Case("torch_optimizer_stateless_groups", _stateless_groups, _convert, lamina.StateMismatchError,
         r"more than one assignment.*param_names"),
    Case("torch_optimizer_search_bomb", _search_bomb, _convert, lamina.StateMismatchError,
         r"too many ways|no assignment", deadline=20.0),
]
