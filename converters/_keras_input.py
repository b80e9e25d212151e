"""Bounded reading of untrusted Keras inputs: the ``.keras`` zip and the HDF5 weights in it.

Every size a file declares is checked against the bytes it really holds before anything is
allocated. Zip entries: stored or deflated only (zipfile bounds deflate's output by the size asked
for, not bzip2's or lzma's), compressed sizes that fit in the archive without overlapping, and a
total expansion of at most ``MAX_RATIO`` times the archive. HDF5 datasets: each one's declared
bytes must be backed by data in the file (a dataset created but never written, or a shape
tampered with, would otherwise make h5py allocate the whole declared array and fill it), and the
storage of everything read must fit in the file once (no dataset read twice through two links).
So reading costs at most the file's size in arrays, or ``MAX_RATIO`` times it for compressed chunks.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

from lamina._errors import FormatError, UnsafePathError

__all__ = ["MAX_RATIO", "read_archive", "check_h5", "H5Data"]

MAX_RATIO = 100  # uncompressed/compressed: more than this is treated as a zip bomb (or an HDF5 one)
_SLACK = 1 << 20  # tiny archives of well-compressible JSON may exceed the ratio
_MAX_DEPTH = 64
_MAX_OBJECTS = 1_000_000


def read_archive(path: Path) -> dict[str, bytes]:
    """Every file entry of a ``.keras`` zip, with all declared sizes checked before reading."""
    try:
        zf = zipfile.ZipFile(path)
        size = path.stat().st_size
    except (zipfile.BadZipFile, OSError) as exc:
        raise FormatError(f"{path}: not a readable .keras archive ({exc})") from None
    with zf:
        infos = [info for info in zf.infolist() if not info.is_dir()]
        compressed = expanded = 0
        for info in infos:
            if info.filename.startswith("/") or ".." in info.filename.split("/"):
                raise FormatError(f"{path}: unsafe entry name {info.filename!r}")
            if info.flag_bits & 0x1:
                raise FormatError(f"{path}: entry {info.filename!r} is encrypted; Keras archives never are")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise FormatError(f"{path}: entry {info.filename!r} uses zip compression method "
                                  f"{info.compress_type}; lamina reads stored or deflated entries only")
            compressed += info.compress_size
            expanded += info.file_size
            if compressed > size:  # entries that overlap, or sizes that lie
                raise FormatError(f"{path}: entry {info.filename!r} claims {info.compress_size} compressed bytes, "
                                  f"more than the archive ({size} bytes) holds beside the other entries")
            if expanded > MAX_RATIO * size + _SLACK:
                raise FormatError(f"{path}: entry {info.filename!r} would expand to {info.file_size} bytes "
                                  f"({expanded} for the archive so far, over {MAX_RATIO}x its {size} bytes); "
                                  "refusing a possible zip bomb")
        out = {}
        for info in infos:
            try:
                with zf.open(info) as member:  # deflate's output is bounded by the size asked for
                    data = member.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise FormatError(f"{path}: entry {info.filename!r} is corrupt ({exc})") from None
            if len(data) != info.file_size:
                raise FormatError(f"{path}: entry {info.filename!r} is not the size its header says")
            out[info.filename] = data
    return out


def check_h5(root: Any, where: str) -> None:
    """Refuse HDF5 features that read outside the file or never end: external and soft links,
    external raw storage, virtual datasets, and (through a depth bound) hard-link cycles."""
    import h5py

    seen = 0

    def visit(group: Any, depth: int) -> None:
        nonlocal seen
        if depth > _MAX_DEPTH:
            raise FormatError(f"{where}: HDF5 groups nested deeper than {_MAX_DEPTH} (a link cycle?)")
        for key in group:
            link = group.get(key, getlink=True)
            if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
                raise UnsafePathError(f"{where}: {group.name.rstrip('/')}/{key} is an HDF5 {type(link).__name__}; "
                                      "lamina reads only data stored in the file itself")
            seen += 1
            if seen > _MAX_OBJECTS:
                raise FormatError(f"{where}: more than {_MAX_OBJECTS} HDF5 objects")
            obj = group[key]
            if isinstance(obj, h5py.Dataset):
                if obj.external or obj.is_virtual:
                    raise UnsafePathError(f"{where}: dataset {obj.name} stores its data outside the file "
                                          f"({'virtual' if obj.is_virtual else 'external storage'}); refused")
            else:
                visit(obj, depth + 1)

    visit(root, 0)


class H5Data:
    """Reads datasets of one HDF5 file of ``file_size`` bytes, each only once its declared size is
    backed by data in the file; the storage of all datasets read must fit in the file, and what
    compressed chunks expand to in ``MAX_RATIO`` times the file (a budget for the whole file, so a
    legitimately compressed all-zero tensor passes)."""

    def __init__(self, file_size: int, where: str) -> None:
        self.file_size, self.where = file_size, where
        self.charged = 0  # storage bytes of the datasets read so far
        self.expanded = 0  # bytes they decompress to

    def array(self, ds: Any) -> Any:
        """The dataset as numpy (bfloat16 from Keras's opaque ``|V2``), after the size checks."""
        import numpy as np

        bf16 = ds.attrs.get("dtype") == "bfloat16" or (ds.dtype.kind == "V" and ds.dtype.itemsize == 2)
        if bf16 and (ds.dtype.itemsize != 2 or ds.dtype.kind not in "Vuif"):
            raise FormatError(f"{self.where}: dataset {ds.name} is marked bfloat16 but has HDF5 type {ds.dtype}")
        if not bf16 and ds.dtype.kind not in "biufc":
            raise FormatError(f"{self.where}: dataset {ds.name}: HDF5 type {ds.dtype} is not supported")
        if ds.shape is None:
            raise FormatError(f"{self.where}: dataset {ds.name} has no shape (an empty HDF5 dataspace)")
        self._check_storage(ds)
        data = np.asarray(ds[()])
        if bf16:
            import ml_dtypes

            return data.view(ml_dtypes.bfloat16)
        return data

    def _check_storage(self, ds: Any) -> None:
        import h5py

        declared = math.prod(ds.shape) * ds.dtype.itemsize
        stored = ds.id.get_storage_size()
        what = f"{self.where}: dataset {ds.name} declares {declared} bytes (shape {ds.shape}, {ds.dtype})"
        plist = ds.id.get_create_plist()
        layout = plist.get_layout()
        expanded = declared  # bytes reading allocates
        if layout == h5py.h5d.CHUNKED:
            # Every chunk the shape covers must be in the file (a missing one is a never-written
            # region h5py would fill in), and what the chunks decompress to is bounded by their bytes.
            needed = math.prod(-(-n // c) for n, c in zip(ds.shape, ds.chunks))
            present = ds.id.get_num_chunks()
            if present < needed:
                raise FormatError(f"{what} in {needed} chunks, but only {present} chunk(s) ({stored} bytes) are "
                                  "stored: data never written, or a tampered shape")
            expanded = present * math.prod(ds.chunks) * ds.dtype.itemsize
            if expanded > stored and not plist.get_nfilters():
                raise FormatError(f"{what}; its {present} uncompressed chunk(s) of {expanded} bytes are stored "
                                  f"in {stored} bytes")
        elif layout == h5py.h5d.CONTIGUOUS:
            offset = ds.id.get_offset()
            if declared and (offset is None or stored < declared):
                raise FormatError(f"{what}, but only {stored if offset is not None else 0} bytes are stored: "
                                  "data never written, or a tampered shape")
            if offset is not None and offset + stored > self.file_size:
                raise FormatError(f"{what}, stored at bytes {offset}..{offset + stored} past the end of the "
                                  f"{self.file_size}-byte file")
        elif layout != h5py.h5d.COMPACT:  # virtual datasets are refused by check_h5
            raise FormatError(f"{what} with HDF5 storage layout {layout}, which lamina does not read")
        self.charged += stored
        self.expanded += expanded
        if self.expanded > MAX_RATIO * self.file_size:  # only compressed chunks get here
            raise FormatError(f"{what}; its chunk(s) expand to {expanded} bytes from {stored} stored bytes, making "
                              f"{self.expanded} bytes read from the file, over {MAX_RATIO}x its {self.file_size} "
                              "bytes: refusing a possible compression bomb")
        if self.charged > self.file_size:
            raise FormatError(f"{what}; with it, the datasets read hold {self.charged} bytes, more than the "
                              f"{self.file_size}-byte file: datasets that share storage or are read twice")
