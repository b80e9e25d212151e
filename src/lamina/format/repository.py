"""The repository layout (format_spec/repository.md): object paths, ref names, revision objects."""

from __future__ import annotations

import getpass
import hashlib
import json
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

from lamina._errors import FormatError, IntegrityError
from lamina.format.manifest import FileEntry

__all__ = ["REPO_MARKER", "REPO_MARKER_BYTES", "Revision", "blob_path", "file_blob_path", "revision_path", "head_path", "tag_path",
           "check_ref_name", "encode_revision", "decode_revision", "default_author", "is_sha256"]

REPO_MARKER = "lamina-repo.json"
REPO_MARKER_BYTES = b'{"format":"lamina-repo","version":1}\n'
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REF_CHARS = re.compile(r"[A-Za-z0-9._/-]{1,200}")
_HEXISH = re.compile(r"[0-9a-fA-F]{7,64}")


def is_sha256(text: object) -> bool:
    return isinstance(text, str) and _HEX64.fullmatch(text) is not None


def blob_path(digest: str, algorithm: str = "sha256") -> str:
    """Where a blob lives: ``blobs/<algorithm>/<h[:2]>/<h>`` (manifests and 1.0-1.2 files under
    sha256, 1.3 files under lt1)."""
    return f"blobs/{algorithm}/{digest[:2]}/{digest}"


def file_blob_path(entry: FileEntry) -> str:
    """The blob path of a snapshot file, by its content address."""
    algorithm, digest = entry.digest
    return blob_path(digest, algorithm)


def revision_path(revision_id: str) -> str:
    return f"revisions/{revision_id}"


def head_path(branch: str) -> str:
    return f"refs/heads/{check_ref_name(branch, 'branch')}"


def tag_path(tag: str) -> str:
    return f"refs/tags/{check_ref_name(tag, 'tag')}"


def check_ref_name(name: object, kind: str = "ref") -> str:
    """A branch or tag name per repository.md §2."""
    if not isinstance(name, str) or not _REF_CHARS.fullmatch(name):
        raise FormatError(f"invalid {kind} name {name!r}: use 1-200 characters of A-Z a-z 0-9 . _ - /")
    bad = (name[0] in "/." or name[-1] in "/." or "//" in name or ".." in name or "/." in name
           or name.endswith(".lock") or _HEXISH.fullmatch(name) is not None)
    if bad:
        raise FormatError(f"invalid {kind} name {name!r}: it must not start or end with '/' or '.', contain "
                          f"'//', '..' or '/.', end in '.lock', or look like a revision id")
    return name


@dataclass(frozen=True)
class Revision:
    """One entry of a repository's history.

    Attributes:
        id: the revision id (sha256 of the revision object).
        snapshot: the snapshot id (sha256 of its manifest).
        parents: the revisions this one follows (empty for a branch's first revision).
        message, author: free text.
        time: creation time (UTC).
    """

    id: str
    snapshot: str
    parents: tuple[str, ...]
    message: str
    author: str
    time: datetime

    @property
    def parent(self) -> str | None:
        return self.parents[0] if self.parents else None

    @property
    def short_id(self) -> str:
        return self.id[:12]


def default_author() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def encode_revision(snapshot: str, parents: tuple[str, ...], message: str, author: str,
                    time: datetime | None = None) -> tuple[str, bytes]:
    """(revision id, object bytes) for a new revision."""
    when = (time or datetime.now(timezone.utc)).astimezone(timezone.utc)
    body = {"author": author, "format": "lamina-revision", "message": message, "parents": list(parents),
            "snapshot": snapshot, "time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "version": 1}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(data).hexdigest(), data


def decode_revision(revision_id: str, data: bytes, where: str) -> Revision:
    """Parse and check a revision object read from ``where``."""
    if hashlib.sha256(data).hexdigest() != revision_id:
        raise IntegrityError(f"{where}: the revision object's bytes do not hash to its name",
                             [(where, "sha256 mismatch")])
    try:
        body = json.loads(data.decode("utf-8"))
        if not isinstance(body, dict) or body.get("format") != "lamina-revision":
            raise ValueError("not a lamina revision object")
        if body.get("version") != 1:
            raise ValueError(f"unsupported revision version {body.get('version')!r}")
        snapshot, parents = body["snapshot"], body["parents"]
        if not is_sha256(snapshot) or not isinstance(parents, list) or not all(map(is_sha256, parents)):
            raise ValueError("snapshot and parents must be sha256 ids")
        message, author = body.get("message", ""), body.get("author", "")
        if not isinstance(message, str) or not isinstance(author, str):
            raise ValueError("message and author must be strings")
        time = datetime.strptime(body["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{where}: malformed revision object: {exc}") from None
    return Revision(revision_id, snapshot, tuple(parents), message, author, time)
