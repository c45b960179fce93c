"""What a node announces about itself, and the helpers to name and identify it.

The same fields travel in the mDNS TXT record and in the UDP broadcast datagram:
``v`` (protocol version), ``node`` (persistent node id), ``model``, ``instances``,
``hw`` (short hardware summary) and ``auth`` (``1`` when a shared secret is required).
A Mode 2 worker (``localswarm worker --rpc``, :mod:`localswarm.federation.rpc`) adds ``rpc``
(its relay port), ``rpcmem`` (bytes of memory it offers) and ``rpcbe`` (its backend: cpu,
cuda, metal, ...); the coordinator trusts them only once the signed handshake confirms them.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from localswarm import paths
from localswarm.federation.protocol import PROTOCOL_VERSION

__all__ = [
    "ENV_HOSTNAME",
    "Advert",
    "default_hostname",
    "hardware_summary",
    "instance_name",
    "load_node_id",
    "parse_txt",
    "server_label",
]

ENV_HOSTNAME = "LOCALSWARM_HOSTNAME"
_NODE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_TXT_MAX = 200  # one TXT string is at most 255 bytes including "key="


def load_node_id(path: Path | None = None) -> str:
    """The persistent node id (32 hex chars), created once in ``state_dir()/node_id``.

    Creation is atomic (``O_EXCL``), so two processes starting together agree on one id.
    A corrupt file is an error, not silently replaced: duplicate or changing ids are what
    make peers invisible (exo #748).
    """
    path = path or paths.state_dir() / "node_id"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(uuid.uuid4().hex + "\n")
    for _ in range(50):  # bounded: another process may be between O_EXCL and write
        value = path.read_text().strip()
        if value:
            break
        time.sleep(0.01)
    if not _NODE_ID_RE.match(value):
        raise RuntimeError(f"Cannot use node id file {path}: expected 32 hex characters, found {value[:40]!r}")
    return value


def default_hostname() -> str:
    """``$LOCALSWARM_HOSTNAME`` or the machine's short host name."""
    return os.environ.get(ENV_HOSTNAME) or socket.gethostname().split(".")[0] or "localswarm"


def instance_name(hostname: str, port: int) -> str:
    """The DNS-SD instance label ``hostname:port``, sanitised.

    Dots would split the label, control characters are not allowed, and a label is at
    most 63 bytes: the hostname part is cut to fit.
    """
    host = re.sub(r"[\x00-\x1f\x7f.]+", "-", hostname).strip("-") or "localswarm"
    suffix = f":{port}"
    raw = host.encode("utf-8")[: 63 - len(suffix)]
    return raw.decode("utf-8", "ignore") + suffix


def server_label(hostname: str, node_id: str) -> str:
    """A DNS host label unique per node (hostnames collide, e.g. in network namespaces)."""
    host = re.sub(r"[^a-z0-9-]+", "-", hostname.lower()).strip("-")[:40] or "localswarm"
    return f"{host}-{node_id[:8]}"


def hardware_summary() -> str:
    """A short hardware line such as ``8cpu/31GiB``; GPUs are added by the caller if known."""
    cpus = os.cpu_count() or 1
    try:
        import psutil

        mem = f"/{psutil.virtual_memory().total / 2**30:.0f}GiB"
    except Exception:
        mem = ""
    return f"{cpus}cpu{mem}"


@dataclass(frozen=True, slots=True)
class Advert:
    """The announced fields of one node."""

    node_id: str
    name: str
    port: int
    model: str = ""
    instances: int = 0
    hw: str = ""
    auth: bool = False
    version: int = PROTOCOL_VERSION
    rpc_port: int = 0  # a Mode 2 worker's relay port (0: not a worker)
    rpc_memory: int = 0  # bytes it offers
    rpc_backend: str = ""

    def txt(self) -> dict[str, str]:
        """TXT record properties (strings, each cut to fit a TXT entry)."""
        txt = {
            "v": str(self.version),
            "node": self.node_id,
            "model": self.model[:_TXT_MAX],
            "instances": str(self.instances),
            "hw": self.hw[:_TXT_MAX],
            "auth": "1" if self.auth else "0",
        }
        if self.rpc_port:
            txt.update(rpc=str(self.rpc_port), rpcmem=str(self.rpc_memory), rpcbe=self.rpc_backend[:_TXT_MAX])
        return txt


def parse_txt(props: Mapping[bytes | str, bytes | str | None]) -> dict[str, object]:
    """Decode TXT (or datagram) fields leniently; missing or bad numbers become defaults.

    ``version`` is ``-1`` when absent or unparsable, so such a peer shows as incompatible.
    """
    d: dict[str, str] = {}
    for k, v in props.items():
        key = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
        if v is None:
            val = ""
        elif isinstance(v, bytes):
            val = v.decode("utf-8", "replace")
        else:
            val = str(v)
        d[key] = val
    fields: dict[str, object] = {
        "version": _to_int(d.get("v"), -1),
        "node_id": d.get("node", ""),
        "model": d.get("model", ""),
        "instances": max(0, _to_int(d.get("instances"), 0)),
        "hw": d.get("hw", ""),
        "auth": d.get("auth", "0") in ("1", "true", "True"),
    }
    if "rpc" in d:  # a Mode 2 worker's offer
        fields.update(rpc_port=max(0, _to_int(d.get("rpc"), 0)), rpc_memory=max(0, _to_int(d.get("rpcmem"), 0)),
                      rpc_backend=d.get("rpcbe", ""))
    return fields


def _to_int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
