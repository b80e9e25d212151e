"""Which format a path holds (from its content) and which one a destination asks for."""

from __future__ import annotations

import zipfile
from pathlib import Path

from lamina._errors import FormatError
from lamina.storage.local import open_regular

from ._tf_bundle import has_table_magic

__all__ = ["FORMATS", "detect_source", "destination_format"]

# tf: TensorFlow checkpoints, read only; hf: a Hugging Face safetensors directory (single, sharded or
# PEFT adapter; also hf://org/name sources); safetensors: one .safetensors file
FORMATS = ("lamina", "torch", "keras", "onnx", "tf", "hf", "safetensors")
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
_TORCH_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # protocol 2 + torch magic


def _zip_format(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "torch"
    if "config.json" in names and ("model.weights.h5" in names or "model.weights.npz" in names):
        return "keras"
    return None


def _looks_like_onnx(head: bytes) -> bool:
    # A ModelProto starts with field 1 (ir_version, varint: 0x08) or another low field tag.
    return head[:1] in (b"\x08", b"\x12", b"\x1a", b"\x22", b"\x32", b"\x3a", b"\x42")


def _tf_checkpoint(p: Path) -> bool:
    """A TensorFlow checkpoint: a SavedModel or checkpoint directory, a prefix whose ``.index``
    exists, an ``.index`` file or a ``.data-*`` file of one (the index is an SSTable: its footer
    ends with the table magic)."""
    if p.is_dir():
        if (p / "saved_model.pb").exists() and (p / "variables").is_dir():  # present; never opened
            return True
        indexes = [i for i in p.glob("*.index") if has_table_magic(i)]
        # a state file names the latest; without one (the BERT release), one index is unambiguous
        return bool(indexes) and ((p / "checkpoint").is_file() or len(indexes) == 1)
    if p.suffix == ".index":
        return has_table_magic(p)
    if not p.exists():
        return has_table_magic(f"{p}.index")
    head, dot, _ = p.name.rpartition(".data-")
    return bool(dot) and has_table_magic(p.with_name(f"{head}.index"))


def _safetensors(head: bytes, p: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON object, all inside the file."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    length = int.from_bytes(head[:8], "little")
    try:
        return 8 + length <= p.stat().st_size
    except OSError:
        return False


def detect_source(path: str | Path) -> str:
    """The format of ``path`` judged from its content: lamina, torch, keras, onnx, tf, hf or
    safetensors. A directory is tried in this order: a lamina snapshot (``manifest.msgpack``), a
    Hugging Face safetensors directory, a Hugging Face torch checkpoint, a TensorFlow checkpoint.
    An ``hf://org/name[@rev]`` location is lamina when the repository holds a lamina snapshot, else hf."""
    if str(path).startswith("hf://"):
        from ._hf_hub import hub_format

        return hub_format(str(path))
    p = Path(path)
    if p.is_dir():
        manifest = p / "manifest.msgpack"
        if manifest.exists() or manifest.is_symlink():  # any kind: opening it says what is wrong with it
            return "lamina"
        if any((p / name).is_file() for name in _HF_WEIGHTS):
            return "hf"  # before torch: hub repositories often carry pytorch_model.bin beside safetensors
        if (p / "pytorch_model.bin.index.json").is_file() or (p / "pytorch_model.bin").is_file():
            return "torch"  # first: Hugging Face repositories often carry a TF checkpoint beside it
        if _tf_checkpoint(p):
            return "tf"
        raise FormatError(f"{p}: a directory that is neither a lamina snapshot, a Hugging Face safetensors or torch "
                          "checkpoint nor a TensorFlow checkpoint or SavedModel")
    if _tf_checkpoint(p):
        return "tf"
    with open_regular(p) as f:  # a FIFO, device or socket is refused here, without blocking
        head = f.read(64)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        found = _zip_format(p)
        if found is None:
            raise FormatError(f"{p}: a zip archive that is neither a torch checkpoint nor a .keras model "
                              "(or it is truncated)")
        return found
    if _safetensors(head, p) and p.suffix.lower() != ".onnx":
        return "safetensors"
    if head.startswith(_HDF5_MAGIC):
        return "keras"
    if head.startswith(_LEGACY_TORCH_MAGIC) or (head[:1] == b"\x80" and p.suffix in _TORCH_SUFFIXES):
        return "torch"
    if _looks_like_onnx(head) and p.suffix.lower() == ".onnx":
        return "onnx"
    if _looks_like_onnx(head):
        try:
            import onnx

            onnx.load_model(str(p), load_external_data=False)
            return "onnx"
        except Exception:
            pass
    raise FormatError(f"{p}: unrecognised format; pass --from {{{','.join(FORMATS)}}}")


def destination_format(path: str | Path, to: str | None = None) -> str:
    """The format a destination asks for: ``to`` if given, else from the extension (``.pt .pth .bin
    .ckpt`` torch, ``.keras`` keras, ``.onnx`` onnx, ``.safetensors`` one safetensors file, anything
    else a lamina directory; a Hugging Face directory needs ``to="hf"``)."""
    if to is not None:
        if to not in FORMATS:
            raise FormatError(f"unknown format {to!r}; choose one of {', '.join(FORMATS)}")
        return to
    suffix = Path(path).suffix.lower()
    if suffix in _TORCH_SUFFIXES:
        return "torch"
    return {".keras": "keras", ".h5": "keras", ".onnx": "onnx", ".safetensors": "safetensors"}.get(suffix, "lamina")
