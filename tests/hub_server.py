"""A fake Hugging Face Hub on 127.0.0.1, for testing the real ``huggingface_hub`` client offline.

``FakeHub`` implements the Hub HTTP endpoints that ``huggingface_hub`` (checked against 2.4.0) calls
to create repos, commit (regular and LFS files, with ``parentCommit`` optimistic concurrency), tag,
branch, list trees/refs/commits and download (``/resolve/`` with ``X-Repo-Commit``, ETags, the
``302`` to a CDN with ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, and byte ranges). State is
in memory. See docs/hub-test-server.md for the endpoint list and what is simplified.

Two listening sockets, like the real deployment:

* ``endpoint``: the Hub (API, ``/resolve/``, git-LFS batch). Pass it as ``endpoint=`` to ``HfApi``,
  ``hf_hub_download`` and ``snapshot_download`` (or set ``HF_ENDPOINT`` before importing
  ``huggingface_hub``).
* ``storage_endpoint``: the "CDN / S3" origin. LFS downloads redirect there (signed URLs, no
  ``Authorization`` needed) and LFS uploads ``PUT`` there. A different origin (port) on purpose:
  the client stops following a ``/resolve/`` redirect at a non-Hub origin and reads the file
  metadata from the ``302`` itself, exactly as with huggingface.co.

Xet storage is **not** implemented. ``huggingface_hub`` >= 1.x uploads through Xet whenever the
``hf_xet`` package is importable, whatever the server says; clients must run with
``HF_HUB_DISABLE_XET=1`` (or ``huggingface_hub.constants.HF_HUB_DISABLE_XET = True``). The Xet
token endpoints answer ``501`` with an explanation, and no response carries an ``X-Xet-*``
header, so downloads use plain HTTP.

Test hooks (all thread-safe): ``requests`` (``(method, path, Range or None, request body length)``,
both origins, path without the query string), ``log`` (dicts with more detail: server, query,
status, whether an ``Authorization`` header came), ``lfs_uploaded_bytes``, ``lfs_uploads`` (oids
stored by PUT), ``reset()``, ``fail_next(n, status, match=...)``, ``drop_next(n, match=...)``,
``server_errors`` (tracebacks of handler crashes: a test should end with none), and direct
state access (``create_repo``, ``commit``, ``head``, ``files``, ``set_gated``...).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import threading
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from servers import Unsatisfiable, parse_range

__all__ = ["FakeHub", "DEFAULT_GITATTRIBUTES"]

# The .gitattributes the Hub commits into every new model/dataset repo ("initial commit").
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)

_TYPE_FROM_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_OID_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_SHORT_COMMIT_RE = re.compile(r"[0-9a-f]{7,39}")
_LFS_JSON = "application/vnd.git-lfs+json"
_XET_MESSAGE = ("FakeHub does not implement Xet storage: run the client with HF_HUB_DISABLE_XET=1 "
                "(or huggingface_hub.constants.HF_HUB_DISABLE_XET = True) so it uses the LFS basic transfer")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    """The Hub's timestamp format (what ``huggingface_hub.utils.parse_datetime`` expects)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A gitattributes/gitignore glob as a regex over a '/'-separated path (no negation, no classes)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _glob_match(pattern: str, path: str) -> bool:
    pattern = pattern.strip()
    if not pattern:
        return False
    anchored = "/" in pattern.rstrip("/")
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):  # a directory pattern: matches everything under such a directory
        pattern += "**"
    if anchored:
        return _glob_regex(pattern).fullmatch(path) is not None
    # No '/': matches the name of any file, or of any directory on the way to it.
    return any(_glob_regex(pattern).fullmatch(part) for part in path.split("/"))


def _lfs_patterns(gitattributes: str) -> list[str]:
    patterns = []
    for line in gitattributes.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            patterns.append(fields[0])
    return patterns


def _ignore_patterns(gitignore: str) -> list[str]:
    return [line.strip() for line in gitignore.splitlines()
            if line.strip() and not line.startswith("#") and not line.startswith("!")]


def _looks_binary(sample: bytes) -> bool:
    return b"\x00" in sample


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class _File:
    """One file of a commit's tree. ``data`` holds the content (for LFS files too)."""

    size: int
    git_oid: str  # git blob sha1 of the content, or of the LFS pointer for LFS files
    lfs_oid: str | None  # sha256 of the content for LFS files
    data: bytes

    @property
    def pointer_size(self) -> int:
        assert self.lfs_oid is not None
        return len(_lfs_pointer(self.lfs_oid, self.size))

    @staticmethod
    def regular(data: bytes) -> _File:
        return _File(len(data), _git_blob_oid(data), None, data)

    @staticmethod
    def lfs(data: bytes, oid: str | None = None) -> _File:
        oid = oid or hashlib.sha256(data).hexdigest()
        return _File(len(data), _git_blob_oid(_lfs_pointer(oid, len(data))), oid, data)


@dataclass
class _Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: datetime
    files: dict[str, _File]


@dataclass
class _Repo:
    type: str
    id: str
    private: bool
    created: datetime
    uid: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)  # LFS objects uploaded to this repo
    gated: bool | str = False
    granted: set[str] = field(default_factory=set)

    @property
    def namespace(self) -> str:
        return self.id.split("/")[0]

    def commit_for(self, rev: str) -> _Commit | None:
        """Branch, tag, full ref name, full commit oid or unique short oid (>= 7 hex)."""
        if rev.startswith("refs/heads/"):
            oid = self.branches.get(rev[len("refs/heads/"):])
        elif rev.startswith("refs/tags/"):
            oid = self.tags.get(rev[len("refs/tags/"):])
        elif rev in self.branches:
            oid = self.branches[rev]
        elif rev in self.tags:
            oid = self.tags[rev]
        elif _COMMIT_RE.fullmatch(rev):
            oid = rev if rev in self.commits else None
        elif _SHORT_COMMIT_RE.fullmatch(rev):
            found = [oid for oid in self.commits if oid.startswith(rev)]
            oid = found[0] if len(found) == 1 else None
        else:
            oid = None
        return self.commits[oid] if oid is not None else None


class _HubError(Exception):
    """An error answer in the Hub's format: JSON ``{"error": ...}`` plus ``X-Error-Message`` (and
    ``X-Error-Code`` when given), which is what ``hf_raise_for_status`` maps to exception classes."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Request:
    server: str  # "hub" or "storage"
    method: str
    raw_path: str
    parts: list[str]  # percent-decoded path segments (a decoded segment may contain '/')
    query: dict[str, list[str]]
    headers: Any  # email.message.Message
    body: bytes
    user: dict[str, Any] | None = None  # token info of a valid bearer token
    token: str | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as exc:
            raise _HubError(400, f"Invalid JSON body: {exc}") from exc


def _json_response(payload: Any, status: int = 200, content_type: str = "application/json; charset=utf-8",
                   headers: Iterable[tuple[str, str]] = ()) -> _Response:
    return _Response(status, json.dumps(payload).encode(), [("Content-Type", content_type), *headers])


def _header_value(text: str) -> str:
    """A header-safe rendering (one line, latin-1) of a message that may quote user paths."""
    return " ".join(text.split()).encode("latin-1", "backslashreplace").decode("latin-1")


def _error_response(error: _HubError, request_id: str) -> _Response:
    headers = [("X-Error-Message", _header_value(error.message)), ("X-Request-Id", request_id)]
    if error.code is not None:
        headers.append(("X-Error-Code", error.code))
    headers.extend(error.headers.items())
    return _json_response({"error": error.message, **error.extra}, error.status, headers=headers)


# --------------------------------------------------------------------------------------------- server
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no delayed-ACK stall between header and body writes
    timeout = 30  # idle keep-alive connections do not pin a thread forever
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_PUT(self) -> None:  # noqa: N802
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        hub = self.server.hub
        try:
            body = self._read_body()  # always drained first: keeps keep-alive connections in sync
        except (OSError, ValueError):
            self.close_connection = True
            return
        split = urlsplit(self.path)
        entry, injected = hub._record(self.server.role, self.command, split.path, split.query,
                                      self.headers.get("Range"), len(body), "Authorization" in self.headers)
        if injected == "drop":
            entry["status"] = None
            self.close_connection = True  # no answer at all: the client sees a dropped connection
            return
        request_id = f"fakehub-{next(hub._request_ids)}"
        if injected is not None:
            response = _error_response(_HubError(int(injected), f"Injected failure ({injected})"), request_id)
        else:
            request = _Request(self.server.role, self.command, split.path,
                               [unquote(part) for part in split.path.split("/")[1:]],
                               parse_qs(split.query, keep_blank_values=True), self.headers, body)
            try:
                response = hub._dispatch(request)
            except _HubError as error:
                response = _error_response(error, request_id)
            except Exception:  # a bug in the fake: answer 500 and keep the traceback for the test
                hub._note_server_error(f"{self.command} {self.path}\n{traceback.format_exc()}")
                response = _error_response(_HubError(500, "FakeHub internal error"), request_id)
        entry["status"] = response.status
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD" and response.body:
                self.wfile.write(response.body)
        except OSError:
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: FakeHub
    role: str

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up mid-answer are expected in failure tests


# ----------------------------------------------------------------------------------------------- hub
class FakeHub:
    """An in-memory Hugging Face Hub on 127.0.0.1 (random ports). Use as a context manager.

    Args:
        lfs_redirect: answer ``/resolve/`` of LFS files with a ``302`` to ``storage_endpoint`` (like
            the real Hub's CDN redirect). With False, LFS files are served directly (``200``) with
            ``ETag`` = the sha256 and the ``X-Linked-*`` headers.
        lfs_threshold: files larger than this many bytes are uploaded as LFS (preupload answers
            ``"lfs"``) and rejected as regular files in a commit, like the Hub's 10 MiB limit.
        gitattributes: create repos with the Hub's initial ``.gitattributes`` commit. Its
            ``filter=lfs`` patterns (``*.safetensors``, ``*.bin``, ...) decide the upload mode, along
            with the size threshold and binary content (a NUL byte in the 512-byte sample).
    """

    USER = "alice"
    ORG = "lamina-org"
    OTHER_USER = "bob"
    WRITE_TOKEN = "hf_write"
    READ_TOKEN = "hf_read"
    OTHER_TOKEN = "hf_other"

    def __init__(self, *, lfs_redirect: bool = True, lfs_threshold: int = 10 * 1024 * 1024,
                 gitattributes: bool = True) -> None:
        self.lfs_redirect = lfs_redirect
        self.lfs_threshold = lfs_threshold
        self.gitattributes = gitattributes
        # token -> {"name": user, "orgs": [...], "write": bool}; edit freely.
        self.tokens: dict[str, dict[str, Any]] = {
            self.WRITE_TOKEN: {"name": self.USER, "orgs": [self.ORG], "write": True},
            self.READ_TOKEN: {"name": self.USER, "orgs": [self.ORG], "write": False},
            self.OTHER_TOKEN: {"name": self.OTHER_USER, "orgs": [], "write": True},
        }
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._uploads: dict[str, tuple[tuple[str, str], str, int]] = {}  # ticket -> (repo key, oid, size)
        self._secret = secrets.token_bytes(16)
        self._request_ids = itertools.count(1)
        self._commit_counter = itertools.count(1)
        self.requests: list[tuple[str, str, str | None, int]] = []
        self.log: list[dict[str, Any]] = []
        self.lfs_uploaded_bytes = 0
        self.lfs_uploads: list[str] = []
        self.server_errors: list[str] = []
        self._injected: list[tuple[int | str, re.Pattern[str] | None]] = []

        self._hub = _Server(("127.0.0.1", 0), _Handler)
        self._storage = _Server(("127.0.0.1", 0), _Handler)
        for server, role in ((self._hub, "hub"), (self._storage, "storage")):
            server.hub, server.role = self, role
        self.endpoint = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.storage_endpoint = f"http://127.0.0.1:{self._storage.server_address[1]}"
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"FakeHub(endpoint={self.endpoint!r}, storage_endpoint={self.storage_endpoint!r})"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeHub:
        if not self._threads:
            for server in (self._hub, self._storage):
                thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                          daemon=True, name=f"FakeHub {server.role}")
                thread.start()
                self._threads.append(thread)
        return self

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for server in (self._hub, self._storage):
            if self._threads:
                server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._threads = []

    # ------------------------------------------------------------------ test hooks
    def reset(self, *, repos: bool = False) -> None:
        """Zero the counters and cancel pending injected failures; with ``repos=True`` also forget
        every repository (tokens are kept)."""
        with self._lock:
            self.requests = []
            self.log = []
            self.lfs_uploaded_bytes = 0
            self.lfs_uploads = []
            self.server_errors = []
            self._injected = []
            if repos:
                self._repos.clear()
                self._uploads.clear()

    def fail_next(self, n: int, status: int = 503, *, match: str | None = None) -> None:
        """Answer the next ``n`` requests (only those whose ``"METHOD /path"`` contains a match of
        the regex ``match``, when given) with ``status`` and a Hub error body, without handling them."""
        with self._lock:
            self._injected.extend([(status, re.compile(match) if match else None)] * n)

    def drop_next(self, n: int, *, match: str | None = None) -> None:
        """Close the connection without answering the next ``n`` (matching) requests."""
        with self._lock:
            self._injected.extend([("drop", re.compile(match) if match else None)] * n)

    def _record(self, server: str, method: str, path: str, query: str, range_header: str | None,
                body_length: int, authorized: bool) -> tuple[dict[str, Any], int | str | None]:
        entry = {"server": server, "method": method, "path": path, "query": query, "range": range_header,
                 "body_length": body_length, "authorization": authorized, "status": None}
        with self._lock:
            self.requests.append((method, path, range_header, body_length))
            self.log.append(entry)
            for i, (action, pattern) in enumerate(self._injected):
                if pattern is None or pattern.search(f"{method} {path}"):
                    del self._injected[i]
                    return entry, action
        return entry, None

    def _note_server_error(self, text: str) -> None:
        with self._lock:
            self.server_errors.append(text)

    # ------------------------------------------------------------------ direct state access
    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False,
                    author: str | None = None) -> None:
        """Create a repo server-side (with the initial ``.gitattributes`` commit), no HTTP."""
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise ValueError(f"{repo_type} {repo_id} exists")
            self._new_repo(repo_type, repo_id, private, author or repo_id.split("/")[0])

    def commit(self, repo_id: str, files: Mapping[str, bytes | None], message: str = "server-side commit",
               *, branch: str = "main", repo_type: str = "model", author: str | None = None,
               lfs: bool | None = None) -> str:
        """Commit server-side (a concurrent writer, as far as clients can tell); returns the oid.

        ``files`` maps a path to its new content, or to None to delete it. ``lfs`` forces every
        added file to LFS (True) or regular (False); None applies the preupload rules."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            head = repo.commits[repo.branches[branch]]
            ops: list[tuple[str, str, _File | None]] = []
            for path, data in files.items():
                if data is None:
                    ops.append(("deletedFile", path, None))
                    continue
                as_lfs = lfs if lfs is not None else self._upload_mode(head, path, len(data), data[:512]) == "lfs"
                if as_lfs:
                    item = _File.lfs(data)
                    repo.lfs.setdefault(item.lfs_oid, data)  # type: ignore[arg-type]
                else:
                    item = _File.regular(data)
                ops.append(("file", path, item))
            return self._apply_commit(repo, branch, ops, message, "", author or repo.namespace, None).oid

    def head(self, repo_id: str, branch: str = "main", *, repo_type: str = "model") -> str:
        with self._lock:
            return self._repo(repo_type, repo_id).branches[branch]

    def files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, bytes]:
        """``{path: content}`` of a revision (branch, tag or commit)."""
        with self._lock:
            commit = self._repo(repo_type, repo_id).commit_for(revision)
            if commit is None:
                raise KeyError(revision)
            return {path: item.data for path, item in commit.files.items()}

    def lfs_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, str]:
        """``{path: sha256}`` of the LFS files of a revision."""
        with self._lock:
            commit = self._repo(repo_type, repo_id).commit_for(revision)
            if commit is None:
                raise KeyError(revision)
            return {path: item.lfs_oid for path, item in commit.files.items() if item.lfs_oid}

    def lfs_objects(self, repo_id: str, *, repo_type: str = "model") -> set[str]:
        """The LFS oids stored for a repo (uploaded, whether committed or not)."""
        with self._lock:
            return set(self._repo(repo_type, repo_id).lfs)

    def commits(self, repo_id: str, branch: str = "main", *, repo_type: str = "model") -> list[str]:
        """Commit oids of a branch, newest first."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            return [commit.oid for commit in self._history(repo, repo.commits[repo.branches[branch]])]

    def refs(self, repo_id: str, *, repo_type: str = "model") -> dict[str, dict[str, str]]:
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            return {"branches": dict(repo.branches), "tags": dict(repo.tags)}

    def set_private(self, repo_id: str, private: bool = True, *, repo_type: str = "model") -> None:
        with self._lock:
            self._repo(repo_type, repo_id).private = private

    def set_gated(self, repo_id: str, gated: bool | str = "auto", granted: Iterable[str] = (),
                  *, repo_type: str = "model") -> None:
        """Gate file downloads (``/resolve/``); users in ``granted`` (and the namespace's members)
        keep access. ``gated=False`` ungates."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            repo.gated, repo.granted = gated, set(granted)

    def has_repo(self, repo_id: str, *, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def env(self, home: str | os.PathLike[str], token: str | None = WRITE_TOKEN) -> dict[str, str]:
        """Environment variables pointing a *new* Python process's huggingface_hub at this hub
        (they are read at import): endpoint, Xet off, an isolated ``HF_HOME`` and the token.
        Merge into a copy of ``os.environ`` from which other ``HF_*`` variables were removed."""
        env = {"HF_ENDPOINT": self.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HOME": os.fspath(home),
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        if token is not None:
            env["HF_TOKEN"] = token
        return env

    def resolve_url(self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """The ``/resolve/`` URL of a file (what ``hf_hub_url`` builds)."""
        return (f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}/resolve/"
                f"{quote(revision, safe='')}/{quote(path)}")

    # ------------------------------------------------------------------ internals: repos and commits
    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        try:
            return self._repos[(repo_type, repo_id)]
        except KeyError:
            raise KeyError(f"no {repo_type} repo {repo_id!r}") from None

    def _new_repo(self, repo_type: str, repo_id: str, private: bool, author: str) -> _Repo:
        repo = _Repo(repo_type, repo_id, private, _now(), secrets.token_hex(12))
        self._repos[(repo_type, repo_id)] = repo
        initial: dict[str, _File] = {}
        if self.gitattributes and repo_type != "space":
            initial[".gitattributes"] = _File.regular(DEFAULT_GITATTRIBUTES.encode())
        commit = self._make_commit(None, "initial commit", "", author, initial)
        repo.commits[commit.oid] = commit
        repo.branches["main"] = commit.oid
        return repo

    def _make_commit(self, parent: str | None, title: str, message: str, author: str,
                     files: dict[str, _File]) -> _Commit:
        tree = hashlib.sha1("\n".join(f"{p} {f.git_oid}" for p, f in sorted(files.items())).encode()).hexdigest()
        moment = _now()
        payload = (f"tree {tree}\nparent {parent}\nauthor {author} {moment.timestamp()} "
                   f"{next(self._commit_counter)}\n\n{title}\n\n{message}")
        return _Commit(hashlib.sha1(payload.encode()).hexdigest(), parent, title, message, author, moment, files)

    def _apply_commit(self, repo: _Repo, branch: str, ops: list[tuple[str, str, _File | None]], title: str,
                      message: str, author: str, parent_commit: str | None) -> _Commit:
        """Apply ``(kind, path, file)`` operations on the branch head (call with the lock held)."""
        if branch not in repo.branches:
            raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        head = repo.branches[branch]
        if parent_commit is not None and parent_commit != head:
            raise _HubError(412, "A commit has happened since. Please refresh and try again.",
                            extra={"parentCommit": parent_commit, "head": head})
        files = dict(repo.commits[head].files)
        for kind, path, item in ops:
            if kind == "deletedFile":
                if path not in files:
                    raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif kind == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix) or prefix == "/"]
                if not doomed:
                    raise _HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                assert item is not None
                if any(p.startswith(path + "/") for p in files):
                    raise _HubError(400, f"Cannot create file {path}: a folder with this name exists")
                parents = path.split("/")[:-1]
                clash = next(("/".join(parents[:i]) for i in range(1, len(parents) + 1)
                              if "/".join(parents[:i]) in files), None)
                if clash is not None:
                    raise _HubError(400, f"Cannot create file {path}: {clash} is a file")
                files[path] = item
        commit = self._make_commit(head, title, message, author, files)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def _history(self, repo: _Repo, commit: _Commit) -> list[_Commit]:
        out = [commit]
        while out[-1].parent is not None:
            out.append(repo.commits[out[-1].parent])
        return out

    def _upload_mode(self, head: _Commit, path: str, size: int, sample: bytes) -> str:
        if size > self.lfs_threshold or _looks_binary(sample):
            return "lfs"
        attributes = head.files.get(".gitattributes")
        if attributes is not None:
            patterns = _lfs_patterns(attributes.data.decode("utf-8", "replace"))
            if any(_glob_match(pattern, path) for pattern in patterns):
                return "lfs"
        return "regular"

    def _sign(self, key: tuple[str, str], oid: str) -> str:
        return hmac.new(self._secret, f"{key[0]}/{key[1]}/{oid}".encode(), hashlib.sha256).hexdigest()[:32]

    # ------------------------------------------------------------------ internals: auth
    def _authenticate(self, request: _Request) -> None:
        header = request.headers.get("Authorization")
        if header is None:
            return
        scheme, _, token = header.partition(" ")
        info = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if info is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        request.user, request.token = info, token.strip()

    @staticmethod
    def _member(user: Mapping[str, Any] | None, namespace: str) -> bool:
        return user is not None and (user["name"] == namespace or namespace in user.get("orgs", ()))

    def _visible(self, request: _Request, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._member(request.user, repo.namespace)):
            # The Hub answers 401 to anonymous requests and 404 to authenticated ones: same error code.
            raise _HubError(401 if request.user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, request: _Request, repo_type: str, repo_id: str) -> _Repo:
        repo = self._visible(request, repo_type, repo_id)
        if request.user is None:
            raise _HubError(401, "You must be authenticated to write to a repository")
        if not request.user.get("write"):
            raise _HubError(403, f"You don't have the rights to write to {repo_type} {repo_id}: "
                                 "this token is read-only")
        if not self._member(request.user, repo.namespace):
            raise _HubError(403, f"You don't have the rights to write to {repo_type} {repo_id}")
        return repo

    def _check_gate(self, request: _Request, repo: _Repo) -> None:
        if not repo.gated or self._member(request.user, repo.namespace):
            return
        if request.user is None or request.user["name"] not in repo.granted:
            raise _HubError(401 if request.user is None else 403,
                            f"Access to {repo.type} {repo.id} is restricted. You must have access to it "
                            "and be authenticated to access it. Please log in.", "GatedRepo")

    @staticmethod
    def _commit_or_404(repo: _Repo, rev: str) -> _Commit:
        commit = repo.commit_for(rev)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ internals: routing
    def _dispatch(self, request: _Request) -> _Response:
        if request.server == "storage":
            return self._storage_route(request)
        with self._lock:
            self._authenticate(request)
            return self._hub_route(request)

    def _hub_route(self, request: _Request) -> _Response:
        parts, method = request.parts, request.method
        if parts[:1] == ["api"]:
            if parts[1:] == ["whoami-v2"] and method == "GET":
                return self._whoami(request)
            if parts[1:] == ["repos", "create"] and method == "POST":
                return self._create_repo(request)
            if parts[1:] == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo(request)
            if parts[1:] == ["validate-yaml"] and method == "POST":
                return _json_response({"errors": [], "warnings": []})
            if len(parts) >= 4 and parts[1] in _TYPE_FROM_PLURAL:
                return self._repo_api(request, _TYPE_FROM_PLURAL[parts[1]], f"{parts[2]}/{parts[3]}", parts[4:])
            raise _HubError(404, f"FakeHub does not implement {method} {request.raw_path}")
        repo_type, rest = "model", parts
        if len(parts) >= 3 and parts[0] in ("datasets", "spaces"):
            repo_type, rest = _TYPE_FROM_PLURAL[parts[0]], parts[1:]
        if len(rest) >= 6 and rest[1].endswith(".git") and rest[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{rest[0]}/{rest[1][:-4]}"
            if rest[5:] == ["batch"] and method == "POST":
                return self._lfs_batch(request, repo_type, repo_id)
            if rest[5:] == ["verify"] and method == "POST":
                return self._lfs_verify(request, repo_type, repo_id)
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(request, repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        raise _HubError(404, f"FakeHub does not implement {method} {request.raw_path}")

    def _repo_api(self, request: _Request, repo_type: str, repo_id: str, rest: list[str]) -> _Response:
        method = request.method
        action, args = (rest[0], rest[1:]) if rest else ("", [])
        if method == "GET" and action == "" and not args:
            return self._repo_info(request, repo_type, repo_id, "main")
        if method == "GET" and action == "revision" and len(args) == 1:
            return self._repo_info(request, repo_type, repo_id, args[0])
        if method == "POST" and action == "preupload" and len(args) == 1:
            return self._preupload(request, repo_type, repo_id, args[0])
        if method == "POST" and action == "commit" and len(args) == 1:
            return self._commit_api(request, repo_type, repo_id, args[0])
        if method == "GET" and action == "tree" and args:
            return self._tree(request, repo_type, repo_id, args[0], "/".join(args[1:]))
        if method == "POST" and action == "paths-info" and len(args) == 1:
            return self._paths_info(request, repo_type, repo_id, args[0])
        if method == "GET" and action == "refs" and not args:
            return self._refs(request, repo_type, repo_id)
        if method == "GET" and action == "commits" and len(args) == 1:
            return self._commits(request, repo_type, repo_id, args[0])
        if action == "tag" and len(args) == 1 and method in ("POST", "DELETE"):
            return self._tag(request, repo_type, repo_id, args[0])
        if action == "branch" and len(args) == 1 and method in ("POST", "DELETE"):
            return self._branch(request, repo_type, repo_id, args[0])
        if method == "PUT" and action == "settings" and not args:
            return self._settings(request, repo_type, repo_id)
        if action in ("xet-read-token", "xet-write-token"):
            raise _HubError(501, _XET_MESSAGE)
        raise _HubError(404, f"FakeHub does not implement {method} {request.raw_path}")

    # ------------------------------------------------------------------ endpoints: account and repos
    def _whoami(self, request: _Request) -> _Response:
        if request.user is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        user = request.user
        return _json_response({
            "type": "user", "id": hashlib.sha1(user["name"].encode()).hexdigest()[:24], "name": user["name"],
            "fullname": user["name"].title(), "email": f"{user['name']}@example.com", "emailVerified": True,
            "canPay": False, "isPro": False, "periodEnd": None, "avatarUrl": "",
            "orgs": [{"type": "org", "name": org, "fullname": org, "id": hashlib.sha1(org.encode()).hexdigest()[:24],
                      "roleInOrg": "write" if user.get("write") else "read"} for org in user.get("orgs", ())],
            "auth": {"type": "access_token", "accessToken": {
                "displayName": f"{'write' if user.get('write') else 'read'} token",
                "role": "write" if user.get("write") else "read", "createdAt": _iso(_now())}},
        })

    def _create_repo(self, request: _Request) -> _Response:
        body = request.json()
        if request.user is None:
            raise _HubError(401, "You must be authenticated to create a repository")
        name, organization = body.get("name"), body.get("organization")
        repo_type = body.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise _HubError(400, f"Invalid repo type: {repo_type}")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or "--" in name or ".." in name:
            raise _HubError(400, f"Invalid repo name: {name!r}")
        namespace = organization or request.user["name"]
        if not request.user.get("write"):
            raise _HubError(403, "You don't have the rights to create a repository: this token is read-only")
        if not self._member(request.user, namespace):
            raise _HubError(403, f"You don't have the rights to create a {repo_type} under the namespace "
                                 f"\"{namespace}\"")
        repo_id = f"{namespace}/{name}"
        url = f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self._repos:
            raise _HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
        visibility = body.get("visibility")
        private = visibility == "private" if visibility is not None else bool(body.get("private", False))
        repo = self._new_repo(repo_type, repo_id, private, request.user["name"])
        return _json_response({"url": url, "name": repo_id, "id": repo.uid})

    def _delete_repo(self, request: _Request) -> _Response:
        body = request.json()
        namespace = body.get("organization") or (request.user or {}).get("name")
        repo_type = body.get("type") or "model"
        repo_id = f"{namespace}/{body.get('name')}"
        self._writable(request, repo_type, repo_id)
        del self._repos[(repo_type, repo_id)]
        return _Response(200)

    def _settings(self, request: _Request, repo_type: str, repo_id: str) -> _Response:
        repo = self._writable(request, repo_type, repo_id)
        body = request.json()
        if "private" in body:
            repo.private = bool(body["private"])
        if body.get("visibility") in ("private", "public"):
            repo.private = body["visibility"] == "private"
        if "gated" in body:
            repo.gated = body["gated"] or False
        return _json_response({})

    def _repo_info(self, request: _Request, repo_type: str, repo_id: str, rev: str) -> _Response:
        repo = self._visible(request, repo_type, repo_id)
        commit = self._commit_or_404(repo, rev)
        blobs = _truthy(request.query.get("blobs"))
        siblings = []
        for path, item in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=item.size, blobId=item.git_oid)
                if item.lfs_oid:
                    sibling["lfs"] = {"sha256": item.lfs_oid, "size": item.size, "pointerSize": item.pointer_size}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": repo.uid, "id": repo.id, "author": repo.namespace, "sha": commit.oid,
            "lastModified": _iso(commit.date), "createdAt": _iso(repo.created), "private": repo.private,
            "gated": repo.gated, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": siblings, "usedStorage": sum(len(data) for data in repo.lfs.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo.id
        return _json_response(info)

    # ------------------------------------------------------------------ endpoints: listing
    def _tree_entry(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict[str, Any]:
        item = commit.files.get(path)
        if item is not None:
            entry: dict[str, Any] = {"type": "file", "oid": item.git_oid, "size": item.size, "path": path}
            if item.lfs_oid:
                entry["lfs"] = {"oid": item.lfs_oid, "size": item.size, "pointerSize": item.pointer_size}
        else:
            prefix = path + "/"
            listing = "\n".join(f"{p} {f.git_oid}" for p, f in sorted(commit.files.items()) if p.startswith(prefix))
            entry = {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}
        if expand:
            last = self._last_commit(repo, commit, path, item is None)
            entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": _iso(last.date)}
            if item is not None:
                entry["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None},
                                               "pickleImportScan": None}
        return entry

    def _last_commit(self, repo: _Repo, commit: _Commit, path: str, is_dir: bool) -> _Commit:
        def signature(c: _Commit) -> Any:
            if is_dir:
                return sorted((p, f.git_oid) for p, f in c.files.items() if p.startswith(path + "/"))
            item = c.files.get(path)
            return item.git_oid if item else None

        current, wanted = commit, signature(commit)
        while current.parent is not None:
            parent = repo.commits[current.parent]
            if signature(parent) != wanted:
                return current
            current = parent
        return current

    @staticmethod
    def _directories(files: Iterable[str]) -> set[str]:
        dirs = set()
        for path in files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    def _tree(self, request: _Request, repo_type: str, repo_id: str, rev: str, path: str) -> _Response:
        repo = self._visible(request, repo_type, repo_id)
        commit = self._commit_or_404(repo, rev)
        path = path.strip("/")
        recursive = _truthy(request.query.get("recursive"))
        expand = _truthy(request.query.get("expand"))
        dirs = self._directories(commit.files)
        if path and path not in dirs:
            raise _HubError(404, f"Entry not found: {path} is not a directory at {rev}", "EntryNotFound",
                            headers={"X-Repo-Commit": commit.oid})
        prefix = path + "/" if path else ""
        names = sorted(p for p in [*dirs, *commit.files] if p.startswith(prefix) and p != path)
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix):]]
            names.sort(key=lambda p: (p not in dirs, p))  # directories first, like the Hub
        return _json_response([self._tree_entry(repo, commit, p, expand) for p in names])

    def _paths_info(self, request: _Request, repo_type: str, repo_id: str, rev: str) -> _Response:
        repo = self._visible(request, repo_type, repo_id)
        commit = self._commit_or_404(repo, rev)
        content_type = request.headers.get("Content-Type", "")
        if "json" in content_type:
            body = request.json()
            paths, expand = body.get("paths", []), bool(body.get("expand"))
        else:
            form = parse_qs(request.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), _truthy(form.get("expand"))
        dirs = self._directories(commit.files)
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files or path in dirs:
                out.append(self._tree_entry(repo, commit, path, expand))
        return _json_response(out)

    def _refs(self, request: _Request, repo_type: str, repo_id: str) -> _Response:
        repo = self._visible(request, repo_type, repo_id)
        return _json_response({
            "branches": [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                         for name, oid in sorted(repo.branches.items())],
            "tags": [{"name": name, "ref": f"refs/tags/{name}", "targetCommit": oid}
                     for name, oid in sorted(repo.tags.items())],
            "converts": [],
            "pullRequests": [],
        })

    def _commits(self, request: _Request, repo_type: str, repo_id: str, rev: str) -> _Response:
        repo = self._visible(request, repo_type, repo_id)
        commit = self._commit_or_404(repo, rev)
        return _json_response([
            {"id": c.oid, "title": c.title, "message": c.message, "authors": [{"user": c.author, "avatar": ""}],
             "date": _iso(c.date)}
            for c in self._history(repo, commit)
        ])

    # ------------------------------------------------------------------ endpoints: refs
    def _tag(self, request: _Request, repo_type: str, repo_id: str, name: str) -> _Response:
        repo = self._writable(request, repo_type, repo_id)
        if request.method == "DELETE":
            if name not in repo.tags:
                raise _HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            del repo.tags[name]
            return _json_response({})
        tag = request.json().get("tag")
        if not isinstance(tag, str) or not tag or tag.startswith("refs/") or ".." in tag or " " in tag:
            raise _HubError(400, f"Invalid tag name: {tag!r}")
        commit = self._commit_or_404(repo, name)  # the URL segment is the revision to tag
        if tag in repo.tags:
            raise _HubError(409, f"Tag {tag} already exists")
        repo.tags[tag] = commit.oid
        return _json_response({})

    def _branch(self, request: _Request, repo_type: str, repo_id: str, name: str) -> _Response:
        repo = self._writable(request, repo_type, repo_id)
        if request.method == "DELETE":
            if name not in repo.branches:
                raise _HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            if name == "main":
                raise _HubError(403, "Cannot delete the default branch")
            del repo.branches[name]
            return _json_response({})
        if not name or name.startswith("refs/") or ".." in name or " " in name:
            raise _HubError(400, f"Invalid reference for a branch: {name}")
        if name in repo.branches:
            raise _HubError(409, f"Branch {name} already exists")
        starting_point = request.json().get("startingPoint") or "main"
        repo.branches[name] = self._commit_or_404(repo, starting_point).oid
        return _json_response({})

    # ------------------------------------------------------------------ endpoints: upload and commit
    def _preupload(self, request: _Request, repo_type: str, repo_id: str, rev: str) -> _Response:
        repo = self._writable(request, repo_type, repo_id)
        if _truthy(request.query.get("create_pr")):
            raise _HubError(400, "FakeHub does not implement pull requests (create_pr)")
        if rev not in repo.branches:
            raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        head = repo.commits[repo.branches[rev]]
        body = request.json()
        files = body.get("files")
        if not isinstance(files, list):
            raise _HubError(400, "Invalid preupload payload: 'files' must be a list")
        gitignore = body.get("gitIgnore")
        if gitignore is None and ".gitignore" in head.files:
            gitignore = head.files[".gitignore"].data.decode("utf-8", "replace")
        ignore = _ignore_patterns(gitignore) if gitignore else []
        out = []
        for spec in files:
            path, size = spec.get("path"), spec.get("size")
            if not isinstance(path, str) or not isinstance(size, int):
                raise _HubError(400, f"Invalid preupload entry: {spec!r}")
            sample = base64.b64decode(spec.get("sample") or "")
            entry: dict[str, Any] = {"path": path, "uploadMode": self._upload_mode(head, path, size, sample),
                                     "shouldIgnore": any(_glob_match(p, path) for p in ignore)}
            existing = head.files.get(path)
            if existing is not None:  # the client skips an unchanged file when this equals its local oid
                entry["oid"] = existing.lfs_oid or existing.git_oid
            out.append(entry)
        return _json_response({"files": out, "commitOid": head.oid})

    def _lfs_batch(self, request: _Request, repo_type: str, repo_id: str) -> _Response:
        body = request.json()
        operation = body.get("operation")
        key = (repo_type, repo_id)
        if operation == "upload":
            repo = self._writable(request, repo_type, repo_id)
        elif operation == "download":
            repo = self._visible(request, repo_type, repo_id)
        else:
            raise _HubError(400, f"Invalid LFS operation: {operation!r}")
        if body.get("hash_algo", "sha256") != "sha256":
            raise _HubError(400, "Only sha256 is supported")
        transfers = body.get("transfers") or ["basic"]
        if "basic" not in transfers:
            raise _HubError(400, f"None of the transfer adapters {transfers} is supported (FakeHub: basic)")
        objects = []
        repo_prefix = f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}.git/info/lfs/objects"
        for obj in body.get("objects") or []:
            oid, size = obj.get("oid"), obj.get("size")
            out: dict[str, Any] = {"oid": oid, "size": size}
            if not isinstance(oid, str) or not _OID_RE.fullmatch(oid) or not isinstance(size, int) or size < 0:
                out["error"] = {"code": 422, "message": "Invalid object: oid must be a sha256, size an int >= 0"}
                out["oid"], out["size"] = str(oid), size if isinstance(size, int) else -1
            elif oid in repo.lfs:
                if len(repo.lfs[oid]) != size:
                    out["error"] = {"code": 422, "message": f"Size mismatch for {oid}: stored {len(repo.lfs[oid])}"}
                elif operation == "download":
                    out["authenticated"] = True
                    out["actions"] = {"download": {"href": self._cdn_url(key, oid), "expires_in": 3600}}
                # upload of a stored object: no "actions", i.e. nothing to upload
            elif operation == "download":
                out["error"] = {"code": 404, "message": "Object does not exist"}
            else:
                ticket = secrets.token_hex(16)
                self._uploads[ticket] = (key, oid, size)
                out["authenticated"] = True
                out["actions"] = {
                    "upload": {"href": f"{self.storage_endpoint}/lfs-upload/{ticket}", "expires_in": 3600},
                    "verify": {"href": f"{repo_prefix}/verify", "header": {}},
                }
            objects.append(out)
        return _json_response({"transfer": "basic", "objects": objects}, content_type=_LFS_JSON)

    def _lfs_verify(self, request: _Request, repo_type: str, repo_id: str) -> _Response:
        repo = self._writable(request, repo_type, repo_id)
        body = request.json()
        oid, size = body.get("oid"), body.get("size")
        if oid not in repo.lfs:
            raise _HubError(404, f"LFS object {oid} was not uploaded")
        if len(repo.lfs[oid]) != size:
            raise _HubError(422, f"LFS object {oid} has size {len(repo.lfs[oid])}, not {size}")
        return _json_response({"success": True}, content_type=_LFS_JSON)

    def _commit_api(self, request: _Request, repo_type: str, repo_id: str, rev: str) -> _Response:
        repo = self._writable(request, repo_type, repo_id)
        if _truthy(request.query.get("create_pr")):
            raise _HubError(400, "FakeHub does not implement pull requests (create_pr)")
        if rev not in repo.branches:
            if repo.commit_for(rev) is not None:
                raise _HubError(400, f"Cannot commit to {rev}: not a branch")
            raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        lines = [line for line in request.body.splitlines() if line.strip()]
        try:
            items = [json.loads(line) for line in lines]
        except ValueError as exc:
            raise _HubError(400, f"Invalid NDJSON commit payload: {exc}") from exc
        if not items or items[0].get("key") != "header":
            raise _HubError(400, "The first line of a commit payload must be the header")
        header = items[0].get("value") or {}
        title = header.get("summary")
        if not isinstance(title, str) or not title.strip():
            raise _HubError(400, "A commit needs a non-empty summary")
        ops: list[tuple[str, str, _File | None]] = []
        for item in items[1:]:
            kind, value = item.get("key"), item.get("value") or {}
            path = value.get("path")
            if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/") \
                    or ".git" in path.split("/"):
                raise _HubError(400, f"Invalid path in commit: {path!r}")
            if kind == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                if len(data) > self.lfs_threshold:
                    raise _HubError(400, f"Your push was rejected because it contains files larger than "
                                         f"{self.lfs_threshold} bytes ({path}). Please use LFS to store large files.")
                ops.append(("file", path, _File.regular(data)))
            elif kind == "lfsFile":
                oid = value.get("oid")
                if value.get("algo", "sha256") != "sha256" or oid not in repo.lfs:
                    raise _HubError(400, f"Your push was rejected because an LFS pointer pointed to a file "
                                         f"that does not exist ({path}: {oid})")
                data = repo.lfs[oid]
                if value.get("size") is not None and value["size"] != len(data):
                    raise _HubError(400, f"LFS object {oid} has size {len(data)}, not {value['size']}")
                ops.append(("file", path, _File.lfs(data, oid)))
            elif kind in ("deletedFile", "deletedFolder"):
                ops.append((kind, path, None))
            else:
                raise _HubError(400, f"FakeHub does not implement commit operation {kind!r}")
        commit = self._apply_commit(repo, rev, ops, title, header.get("description") or "",
                                    request.user["name"], header.get("parentCommit"))
        return _json_response({
            "success": True, "commitOid": commit.oid, "hookOutput": "",
            "commitUrl": f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}/commit/{commit.oid}",
        })

    # ------------------------------------------------------------------ endpoints: download
    def _cdn_url(self, key: tuple[str, str], oid: str) -> str:
        repo_type, repo_id = key
        return (f"{self.storage_endpoint}/cdn-lfs/{_URL_PREFIX[repo_type]}{repo_id}/{oid}"
                f"?X-Signature={self._sign(key, oid)}")

    def _resolve(self, request: _Request, repo_type: str, repo_id: str, rev: str, path: str) -> _Response:
        repo = self._visible(request, repo_type, repo_id)
        self._check_gate(request, repo)
        commit = self._commit_or_404(repo, rev)
        item = commit.files.get(path)
        if item is None:
            raise _HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        headers = [("X-Repo-Commit", commit.oid)]
        if item.lfs_oid is not None:
            headers += [("X-Linked-Etag", f'"{item.lfs_oid}"'), ("X-Linked-Size", str(item.size))]
            if self.lfs_redirect:
                location = self._cdn_url((repo_type, repo_id), item.lfs_oid)
                headers += [("ETag", f'"{item.git_oid}"'), ("Location", location),
                            ("Content-Type", "text/plain; charset=utf-8")]
                return _Response(302, f"Found. Redirecting to {location}".encode(), headers)
        etag = item.lfs_oid or item.git_oid
        return _ranged(request, item.data, f'"{etag}"', headers)

    def _storage_route(self, request: _Request) -> _Response:
        parts, method = request.parts, request.method
        if parts[:1] == ["lfs-upload"] and len(parts) == 2 and method == "PUT":
            return self._lfs_put(request, parts[1])
        if parts[:1] == ["cdn-lfs"] and len(parts) >= 4 and method in ("GET", "HEAD"):
            rest = parts[1:]
            repo_type = "model"
            if rest[0] in ("datasets", "spaces"):
                repo_type, rest = _TYPE_FROM_PLURAL[rest[0]], rest[1:]
            if len(rest) == 3:
                key, oid = (repo_type, f"{rest[0]}/{rest[1]}"), rest[2]
                signature = (request.query.get("X-Signature") or [""])[-1]
                if not hmac.compare_digest(signature, self._sign(key, oid)):
                    return _Response(403, b"AccessDenied: bad signature", [("Content-Type", "text/plain")])
                with self._lock:
                    repo = self._repos.get(key)
                    data = repo.lfs.get(oid) if repo is not None else None
                if data is None:
                    return _Response(404, b"NoSuchKey", [("Content-Type", "text/plain")])
                return _ranged(request, data, f'"{oid}"', [])
        return _Response(404, b"NoSuchKey", [("Content-Type", "text/plain")])

    def _lfs_put(self, request: _Request, ticket: str) -> _Response:
        with self._lock:
            upload = self._uploads.get(ticket)
        if upload is None:
            return _Response(403, b"AccessDenied: unknown or expired upload URL", [("Content-Type", "text/plain")])
        key, oid, size = upload
        data = request.body
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            return _Response(400, f"BadDigest: got {len(data)} bytes with sha256 {hashlib.sha256(data).hexdigest()}, "
                                  f"expected {size} bytes with sha256 {oid}".encode(), [("Content-Type", "text/plain")])
        with self._lock:
            repo = self._repos.get(key)
            if repo is None:
                return _Response(404, b"NoSuchBucket", [("Content-Type", "text/plain")])
            repo.lfs[oid] = data
            self.lfs_uploaded_bytes += len(data)
            self.lfs_uploads.append(oid)
        return _Response(200, b"", [("ETag", f'"{hashlib.md5(data).hexdigest()}"')])


def _ranged(request: _Request, data: bytes, etag: str, headers: list[tuple[str, str]]) -> _Response:
    """A file answer (GET/HEAD) with ETag, Accept-Ranges and a single byte range."""
    headers = [*headers, ("ETag", etag), ("Accept-Ranges", "bytes"), ("Content-Type", "application/octet-stream")]
    try:
        span = parse_range(request.headers.get("Range"), len(data))
    except Unsatisfiable:
        return _Response(416, b"", [*headers, ("Content-Range", f"bytes */{len(data)}")])
    if span is None:
        return _Response(200, data, headers)
    start, end = span
    return _Response(206, data[start:end], [*headers, ("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")])

