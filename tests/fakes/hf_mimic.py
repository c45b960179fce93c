"""A local HTTP server that mimics the parts of the Hugging Face Hub that downloads use.

It is a real server (``http.server.ThreadingHTTPServer`` in a daemon thread, bound to
127.0.0.1 on a free port) so ``huggingface_hub`` talks to it over TCP exactly as it talks
to huggingface.co. What it serves, checked against huggingface_hub 2.4's
``file_download.get_hf_file_metadata`` / ``http_get``:

* ``HEAD|GET {endpoint}/{repo}/resolve/{rev}/{file}``: 200 with ``X-Repo-Commit`` (40 hex),
  ``ETag`` (the sha256 in quotes for LFS-like files, a git-sha1-like digest otherwise),
  ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS-like files, ``Content-Length``,
  ``Accept-Ranges: bytes``. GET honours ``Range: bytes=N-[M]`` with 206 + ``Content-Range``.
  ``X-Xet-Hash`` is never sent, so the client uses plain HTTP and never hf_xet.
* Unknown repo: 401 + ``X-Error-Code: RepoNotFound``; unknown file: 404 +
  ``X-Error-Code: EntryNotFound``; unknown revision: 404 + ``X-Error-Code: RevisionNotFound``
  (what ``hf_raise_for_status`` maps to its typed errors).
* ``GET {endpoint}/api/agent-harnesses``: an empty registry (huggingface_hub 2.x fetches it,
  best effort, from ``constants.ENDPOINT`` when it builds its user agent).
* ``GET {endpoint}/api/models/{repo}[/revision/{rev}]``: ``{"id", "sha", "siblings": [...]}``
  (``hf_hub_download`` does not need it, ``HfApi.model_info``/``list_repo_files`` do).

Pointing the client at it: ``huggingface_hub`` reads ``HF_ENDPOINT`` once, at import time,
into ``constants.ENDPOINT``. ``hf_hub_download`` accepts ``endpoint=`` and rewrites its URLs
with it, and ``localswarm.models.download`` passes ``HF_ENDPOINT`` read at *call* time as
that argument, so tests simply ``monkeypatch.setenv("HF_ENDPOINT", mimic.endpoint)``.

Resume caveat: huggingface_hub reads bodies in ``constants.DOWNLOAD_CHUNK_SIZE`` (10 MiB)
pieces and bytes of an unfinished piece are lost when the connection drops, so a resume
test must cut the connection *after* at least one full piece (e.g. a 12 MiB file cut at
11 MiB), otherwise the retry restarts from zero without a Range header.

Fault injection (each applies to GET bodies of one file):

* ``drop_after(repo, file, nbytes, times=1)``: send the headers and ``nbytes`` of the body,
  then close the socket (the client sees an incomplete body and must resume with Range).
* ``corrupt(repo, file)``: serve different bytes of the same length (checksum mismatch).
* ``truncate(repo, file, nbytes)``: advertise the full size but serve only ``nbytes`` (no drop
  recovery possible on resume, since every attempt is short).

Every request is recorded in ``mimic.requests`` (method, path, headers).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

_RESOLVE_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_FLIP = bytes(b ^ 0x5A for b in range(256))  # translate table: every byte changed
_API_RE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")


@dataclass
class RecordedRequest:
    """One request the mimic received."""

    method: str
    path: str
    headers: dict[str, str]

    @property
    def range(self) -> str | None:
        """The ``Range`` header, if any."""
        for key, value in self.headers.items():
            if key.lower() == "range":
                return value
        return None


@dataclass
class HubFile:
    """A file of a mimicked repository."""

    data: bytes
    lfs: bool = True
    drop_after: int | None = None
    drops_left: int = 0
    corrupt: bool = False
    truncate_to: int | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_oid(self) -> str:
        # git's blob id: sha1 over "blob <len>\0<data>".
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()  # noqa: S324

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class HubRepo:
    """A mimicked model repository: one commit per revision name."""

    repo_id: str
    revisions: dict[str, str] = field(default_factory=dict)  # name -> commit hash
    files: dict[str, HubFile] = field(default_factory=dict)


class HFMimic:
    """The mimic server. Use as a context manager, or call ``start()`` / ``stop()``."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._address: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None

    # -- content -----------------------------------------------------------------------

    def add_file(
        self, repo_id: str, filename: str, data: bytes, *, lfs: bool = True, revision: str = "main"
    ) -> HubFile:
        """Publish ``data`` as ``filename`` in ``repo_id`` (created on first use)."""
        repo = self.repos.setdefault(repo_id, HubRepo(repo_id))
        if revision not in repo.revisions:
            repo.revisions[revision] = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()  # noqa: S324
        hub_file = HubFile(data=data, lfs=lfs)
        repo.files[filename] = hub_file
        return hub_file

    def commit(self, repo_id: str, revision: str = "main") -> str:
        """The commit hash the mimic answers for ``repo_id@revision``."""
        return self.repos[repo_id].revisions[revision]

    def file(self, repo_id: str, filename: str) -> HubFile:
        """The published file object (to tweak fault injection)."""
        return self.repos[repo_id].files[filename]

    # -- fault injection ---------------------------------------------------------------

    def drop_after(self, repo_id: str, filename: str, nbytes: int, *, times: int = 1) -> None:
        """Cut the connection after ``nbytes`` of the body, for the next ``times`` GETs."""
        f = self.file(repo_id, filename)
        f.drop_after, f.drops_left = nbytes, times

    def corrupt(self, repo_id: str, filename: str, enabled: bool = True) -> None:
        """Serve other bytes of the same length (headers still advertise the real sha256)."""
        self.file(repo_id, filename).corrupt = enabled

    def truncate(self, repo_id: str, filename: str, nbytes: int | None) -> None:
        """Advertise the full length but only ever send ``nbytes`` then close."""
        self.file(repo_id, filename).truncate_to = nbytes

    # -- inspection --------------------------------------------------------------------

    def gets(self, filename: str | None = None) -> list[RecordedRequest]:
        """GET requests received (optionally only those for ``filename``)."""
        with self._lock:
            reqs = list(self.requests)
        return [
            r for r in reqs if r.method == "GET" and (filename is None or r.path.endswith("/" + filename))
        ]

    def count(self, method: str | None = None) -> int:
        """Number of requests received (optionally of one method)."""
        with self._lock:
            return sum(1 for r in self.requests if method is None or r.method == method)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Base URL to use as ``HF_ENDPOINT``."""
        assert self._address is not None, "mimic not started"
        host, port = self._address  # kept after stop(): the URL then refuses connections
        return f"http://{host}:{port}"

    def start(self) -> HFMimic:
        """Start serving on 127.0.0.1 on a free port."""
        handler = type("Handler", (_Handler,), {"mimic": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self._address = (str(host), int(port))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="hf-mimic", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (the port then refuses connections, like a dead network)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HFMimic:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    mimic: HFMimic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr logging
        pass

    def _record(self) -> str:
        path = unquote(urlsplit(self.path).path)
        with self.mimic._lock:
            self.mimic.requests.append(RecordedRequest(self.command, path, dict(self.headers.items())))
        return path

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(head=False)

    # -- routing -----------------------------------------------------------------------

    def _dispatch(self, *, head: bool) -> None:
        path = self._record()
        m = _RESOLVE_RE.match(path)
        if m:
            self._resolve(m["repo"], m["rev"], m["file"], head=head)
            return
        if path == "/api/agent-harnesses" and not head:
            # huggingface_hub >= 2.x fetches this registry (best effort) to build its user agent.
            self._json({"standardEnvVars": [], "harnesses": {}})
            return
        m = _API_RE.match(path)
        if m and not head:
            self._api(m["repo"], m["rev"] or "main")
            return
        self._error(404, "EntryNotFound", "Not found")

    def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _api(self, repo_id: str, rev: str) -> None:
        repo = self.mimic.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
            return
        if rev not in repo.revisions and rev not in repo.revisions.values():
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return
        sha = repo.revisions.get(rev, rev)
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": sha,
            "private": False,
            "siblings": [
                {
                    "rfilename": name,
                    "size": len(f.data),
                    **({"lfs": {"sha256": f.sha256, "size": len(f.data)}} if f.lfs else {}),
                }
                for name, f in repo.files.items()
            ],
        }
        self._json(info)

    def _json(self, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, repo_id: str, rev: str, filename: str, *, head: bool) -> None:
        repo = self.mimic.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
            return
        commit = repo.revisions.get(rev) or (rev if rev in repo.revisions.values() else None)
        if commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return
        hub_file = repo.files.get(filename)
        if hub_file is None:
            self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
            return

        total = len(hub_file.data)
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{hub_file.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if hub_file.lfs:
            headers["X-Linked-Etag"] = f'"{hub_file.sha256}"'
            headers["X-Linked-Size"] = str(total)

        if head:
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(total))
            self.end_headers()
            return

        data = hub_file.data
        if hub_file.corrupt:
            data = data.translate(_FLIP)

        start, end = 0, total - 1
        status = 200
        range_header = self.headers.get("Range")
        if range_header:
            rm = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if rm is None or int(rm[1]) >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(rm[1])
            end = min(int(rm[2]), total - 1) if rm[2] else total - 1
            status = 206
        body = data[start : end + 1]

        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

        cut: int | None = None
        with self.mimic._lock:
            if hub_file.drops_left > 0 and hub_file.drop_after is not None:
                hub_file.drops_left -= 1
                cut = hub_file.drop_after
        if hub_file.truncate_to is not None:
            cut = hub_file.truncate_to if cut is None else min(cut, hub_file.truncate_to)
        if cut is not None and cut < len(body):
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)
