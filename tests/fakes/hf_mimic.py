"""A local Hugging Face Hub for tests: the Hub on 127.0.0.1 and its "CDN" on 127.0.0.2.

Two real servers (``http.server.ThreadingHTTPServer`` in daemon threads) so that
``huggingface_hub`` and ``localswarm`` talk to them over TCP exactly as they talk to
huggingface.co and its CDN. Built from ``/work/shared/reference/real-services.md`` §1 (read
in huggingface_hub 0.36.2 / 1.x / 2.4 ``file_download.py``, ``hf_api.py``, ``utils/_http.py``,
measured against both clients) — the checklist of its §6:

* ``HEAD|GET /{repo}/resolve/{rev}/{path}``
  - small (non-LFS) file: 200 with ``X-Repo-Commit``, ``ETag: "<git sha1>"``, ``Content-Length``;
  - LFS file: **302 to the other host** (``http://127.0.0.2:<port>/cdn/<sha256>?sig=…``) carrying
    ``X-Repo-Commit``, ``X-Linked-Etag: "<sha256>"``, ``X-Linked-Size``, ``ETag: "<pointer git sha1>"``
    and the redirect body's own ``Content-Length`` (as the real Hub does; huggingface_hub ≥1.30 stops
    its HEAD at a foreign host and reads the metadata off the 302, older ones take the headers too).
* CDN ``HEAD|GET /cdn/<sha256>``: 200 with the body, ``ETag: "<sha256>"`` and the real CDN's
  ``Content-Disposition: inline; filename*=UTF-8''<name>; filename="<name>";``, ``Range: bytes=N-[M]``
  → 206 + ``Content-Range``; none of the ``X-Repo-Commit`` / ``X-Linked-*`` headers (hf-hub PR #212).
* ``GET /api/models/{repo}[/revision/{rev}]``: ``{id, sha, siblings[{rfilename}]}``; with
  ``?blobs=true`` (any case) each sibling adds ``size``, ``blobId`` and for LFS files
  ``lfs{size, sha256, pointerSize}``.
* ``GET /api/models/{repo}/tree/{rev}?recursive=…``: ``[{type, oid, size, path, lfs{oid,size,pointerSize}}]``;
  ``GET /api/models/{repo}/refs``: ``{branches[{name, ref, targetCommit}], tags, converts}`` (llama.cpp ``-hf``).
* Errors carry ``X-Error-Code``: unknown repo 401 ``RepoNotFound`` (plain http: the client keys on the
  code), unknown revision 404 ``RevisionNotFound``, unknown file 404 ``EntryNotFound`` + ``X-Repo-Commit``.
* Never ``X-Xet-Hash`` / ``xetHash``: clients then use the plain ``/resolve`` path.
* ``GET /api/agent-harnesses``: an empty registry (huggingface_hub 2.x asks for it, best effort).

Faults and pacing, to drive the paths real users hit:

* ``fail(status, times=1, retry_after=None, where="resolve"|"cdn"|"api")``: the next ``times``
  requests there answer ``status`` (429 or 5xx) with ``Retry-After`` when given.
* ``throttle(bytes_per_s)``: CDN bodies are paced (a slow first-run download).
* ``drop_after(repo, file, nbytes, times=1)``: send ``nbytes`` of the body, then close the socket.
* ``corrupt(repo, file)``: other bytes of the same length (the client checks only the size).
* ``truncate(repo, file, nbytes)``: advertise the full length, send only ``nbytes``.
* ``publish_split(repo, stem, data, parts)``: ``<stem>-0000k-of-0000N.gguf`` parts, as Qwen publishes
  its big quants (byte slices: enough for download tests, not loadable by llama-server).

Every request is recorded in ``mimic.requests`` (host ``hub``/``cdn``, method, path, headers, file).
``mimic.stop()`` closes both ports, like a network that went away.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

_RESOLVE_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_CDN_RE = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")
_FLIP = bytes(b ^ 0x5A for b in range(256))  # translate table: every byte changed
_API_RE = re.compile(
    r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree)/(?P<rev>[^/]+)|/(?P<refs>refs))?$"
)
POINTER_SIZE = 135  # bytes of a git-lfs pointer file, as the Hub reports it
CDN_HOST = "127.0.0.2"  # another hostname than the Hub's (see real-services.md §1.2 "Rule for fakes")


@dataclass
class RecordedRequest:
    """One request the mimic received."""

    method: str
    path: str
    headers: dict[str, str]
    host: str = "hub"  # "hub" or "cdn"
    file: str | None = None  # the repo file it concerns, when known

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

    name: str
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
    def pointer_oid(self) -> str:
        """The git sha1 of the LFS pointer file (the ``blobId`` / plain ``ETag`` of an LFS file)."""
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n"
        return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer.encode()).hexdigest()  # noqa: S324

    @property
    def etag(self) -> str:
        """What the client names the cache blob after: sha256 for LFS, git sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class HubRepo:
    """A mimicked model repository: one commit per revision name."""

    repo_id: str
    revisions: dict[str, str] = field(default_factory=dict)  # name -> commit hash
    files: dict[str, HubFile] = field(default_factory=dict)

    def commit_of(self, rev: str) -> str | None:
        if rev in self.revisions:
            return self.revisions[rev]
        return rev if rev in self.revisions.values() else None


@dataclass
class _Failure:
    status: int
    times: int
    retry_after: str | None


class HFMimic:
    """The mimic (Hub + CDN). Use as a context manager, or call ``start()`` / ``stop()``."""

    def __init__(self, *, cdn_host: str = CDN_HOST) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.bytes_per_s: float | None = None
        self._failures: dict[str, list[_Failure]] = {"resolve": [], "cdn": [], "api": []}
        self._lock = threading.Lock()
        self._cdn_host = cdn_host
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._addresses: dict[str, tuple[str, int]] = {}

    # -- content -----------------------------------------------------------------------

    def add_file(
        self, repo_id: str, filename: str, data: bytes, *, lfs: bool = True, revision: str = "main",
        commit: str | None = None,
    ) -> HubFile:
        """Publish ``data`` as ``filename`` in ``repo_id`` (created on first use)."""
        repo = self.repos.setdefault(repo_id, HubRepo(repo_id))
        if revision not in repo.revisions:
            repo.revisions[revision] = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()  # noqa: S324
        hub_file = HubFile(name=filename, data=data, lfs=lfs)
        repo.files[filename] = hub_file
        return hub_file

    def publish_split(self, repo_id: str, stem: str, data: bytes, parts: int) -> list[str]:
        """Publish ``data`` cut in ``parts`` files named like llama.cpp's ``gguf-split``."""
        size = -(-len(data) // parts)
        names = []
        for k in range(parts):
            name = f"{stem}-{k + 1:05d}-of-{parts:05d}.gguf"
            self.add_file(repo_id, name, data[k * size:(k + 1) * size])
            names.append(name)
        return names

    def commit(self, repo_id: str, revision: str = "main") -> str:
        """The commit hash the mimic answers for ``repo_id@revision``."""
        return self.repos[repo_id].revisions[revision]

    def file(self, repo_id: str, filename: str) -> HubFile:
        """The published file object (to tweak fault injection)."""
        return self.repos[repo_id].files[filename]

    def _by_sha(self, sha: str) -> HubFile | None:
        for repo in self.repos.values():
            for f in repo.files.values():
                if f.lfs and f.sha256 == sha:
                    return f
        return None

    # -- faults and pacing -------------------------------------------------------------

    def fail(self, status: int, *, times: int = 1, retry_after: int | str | None = None,
             where: str = "resolve") -> None:
        """The next ``times`` requests at ``where`` (resolve, cdn, api) answer ``status``."""
        with self._lock:
            self._failures[where].append(
                _Failure(status, times, None if retry_after is None else str(retry_after)))

    def _take_failure(self, where: str) -> _Failure | None:
        with self._lock:
            queue = self._failures[where]
            while queue and queue[0].times <= 0:
                queue.pop(0)
            if not queue:
                return None
            queue[0].times -= 1
            return queue[0]

    def throttle(self, bytes_per_s: float | None) -> None:
        """Pace CDN bodies to ``bytes_per_s`` (None: full speed)."""
        self.bytes_per_s = bytes_per_s

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
        """Body GETs received (at the CDN for LFS files), optionally only for ``filename``."""
        with self._lock:
            reqs = list(self.requests)
        out = []
        for r in reqs:
            if r.method != "GET" or r.file is None or (filename is not None and r.file != filename):
                continue
            if r.host == "cdn" or "/resolve/" in r.path and not self._is_lfs(r.file):
                out.append(r)
        return out

    def _is_lfs(self, filename: str) -> bool:
        return any(filename in repo.files and repo.files[filename].lfs for repo in self.repos.values())

    def count(self, method: str | None = None) -> int:
        """Number of requests received (optionally of one method)."""
        with self._lock:
            return sum(1 for r in self.requests if method is None or r.method == method)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Base URL to use as ``HF_ENDPOINT``."""
        host, port = self._addresses["hub"]  # kept after stop(): the URL then refuses connections
        return f"http://{host}:{port}"

    @property
    def cdn_base(self) -> str:
        host, port = self._addresses["cdn"]
        return f"http://{host}:{port}"

    def start(self) -> HFMimic:
        """Start the Hub on 127.0.0.1 and the CDN on ``cdn_host``, each on a free port."""
        for role, host in (("hub", "127.0.0.1"), ("cdn", self._cdn_host)):
            handler = type("Handler", (_Handler,), {"mimic": self, "role": role})
            server = ThreadingHTTPServer((host, 0), handler)
            server.daemon_threads = True
            self._servers[role] = server
            self._addresses[role] = (str(server.server_address[0]), int(server.server_address[1]))
            threading.Thread(target=server.serve_forever, args=(0.05,), name=f"hf-mimic-{role}",
                             daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving (both ports then refuse connections, like a dead network)."""
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> HFMimic:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    mimic: HFMimic
    role: str
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr logging
        pass

    def _record(self, path: str, file: str | None) -> None:
        with self.mimic._lock:
            self.mimic.requests.append(
                RecordedRequest(self.command, path, dict(self.headers.items()), self.role, file))

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(head=False)

    # -- routing -----------------------------------------------------------------------

    def _dispatch(self, *, head: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k.lower(): v[-1] for k, v in parse_qs(parts.query).items()}
        if self.role == "cdn":
            m = _CDN_RE.match(path)
            hub_file = self.mimic._by_sha(m["sha"]) if m else None
            self._record(path, hub_file.name if hub_file else None)
            if hub_file is None:
                self._plain(404, b"NoSuchKey")
            elif not self._injected("cdn"):
                # The real CDN names the file (huggingface_hub's progress bar reads it from here).
                name = hub_file.name.rsplit("/", 1)[-1]
                self._body(hub_file, head=head, headers={
                    "ETag": f'"{hub_file.sha256}"',
                    "Content-Disposition": f"inline; filename*=UTF-8''{name}; filename=\"{name}\";"})
            return
        m = _RESOLVE_RE.match(path)
        if m:
            self._record(path, m["file"])
            if not self._injected("resolve"):
                self._resolve(m["repo"], m["rev"], m["file"], head=head)
            return
        self._record(path, None)
        if path == "/api/agent-harnesses" and not head:
            self._json({"standardEnvVars": [], "harnesses": {}})
            return
        m = _API_RE.match(path)
        if m and not head:
            if not self._injected("api"):
                self._api(m["repo"], m["kind"], m["rev"], bool(m["refs"]), query)
            return
        self._error(404, "EntryNotFound", "Not found")

    def _injected(self, where: str) -> bool:
        failure = self.mimic._take_failure(where)
        if failure is None:
            return False
        extra = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
        message = "Too Many Requests" if failure.status == 429 else "Service Unavailable"
        body = json.dumps({"error": message}).encode()
        self.send_response(failure.status)
        self.send_header("Content-Type", "application/json")
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return True

    def _plain(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

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

    def _api(self, repo_id: str, kind: str | None, rev: str | None, refs: bool, query: dict[str, str]) -> None:
        repo = self.mimic.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
            return
        if refs:
            self._json({"branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                                     for n, c in repo.revisions.items()], "tags": [], "converts": []})
            return
        sha = repo.commit_of(rev or "main")
        if sha is None:
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return
        if kind == "tree":
            self._json([
                {"type": "file", "oid": f.pointer_oid if f.lfs else f.git_oid, "size": len(f.data), "path": name,
                 **({"lfs": {"oid": f.sha256, "size": len(f.data), "pointerSize": POINTER_SIZE}} if f.lfs else {})}
                for name, f in repo.files.items()
            ])
            return
        blobs = query.get("blobs", "").lower() == "true"
        siblings = []
        for name, f in repo.files.items():
            entry: dict[str, object] = {"rfilename": name}
            if blobs:
                entry["size"] = len(f.data)
                entry["blobId"] = f.pointer_oid if f.lfs else f.git_oid
                if f.lfs:
                    entry["lfs"] = {"size": len(f.data), "sha256": f.sha256, "pointerSize": POINTER_SIZE}
            siblings.append(entry)
        self._json({"id": repo_id, "modelId": repo_id, "sha": sha, "private": False, "gated": False,
                    "disabled": False, "siblings": siblings})

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
        commit = repo.commit_of(rev)
        if commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return
        hub_file = repo.files.get(filename)
        if hub_file is None:
            self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
            return
        if hub_file.lfs:
            body = b"Found. Redirecting to the CDN"
            self.send_response(302)
            self.send_header("Location", f"{self.mimic.cdn_base}/cdn/{hub_file.sha256}?sig=1&expires=9999999999")
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hub_file.pointer_oid}"')
            self.send_header("X-Linked-Etag", f'"{hub_file.sha256}"')
            self.send_header("X-Linked-Size", str(len(hub_file.data)))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        self._body(hub_file, head=head, headers={"X-Repo-Commit": commit, "ETag": f'"{hub_file.git_oid}"'},
                   paced=False)

    def _body(self, hub_file: HubFile, *, head: bool, headers: dict[str, str], paced: bool = True) -> None:
        total = len(hub_file.data)
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if head:
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(total))
            self.end_headers()
            return
        data = hub_file.data.translate(_FLIP) if hub_file.corrupt else hub_file.data
        start, end, status = 0, total - 1, 200
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
        body = data[start:end + 1]
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
        payload = body[:cut] if cut is not None and cut < len(body) else body
        try:
            self._send_paced(payload, self.mimic.bytes_per_s if paced else None)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if payload is not body:
            self.close_connection = True

    def _send_paced(self, payload: bytes, rate: float | None) -> None:
        if not rate:
            self.wfile.write(payload)
            return
        chunk = max(1, int(rate / 20))  # 20 writes a second
        began = time.monotonic()
        for offset in range(0, len(payload), chunk):
            self.wfile.write(payload[offset:offset + chunk])
            ahead = (offset + chunk) / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
