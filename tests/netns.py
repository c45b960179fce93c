"""Throwaway LANs made of Linux network namespaces, for multi-host tests on one machine.

``lan(n)`` builds ``n`` hosts, each a namespace with one veth (``eth0``) plugged into a
bridge that itself lives in its own namespace, so nothing touches the root namespace's
interfaces or addresses. Addresses come from a test-only subnet (default 10.231.0.0/24)
that exists only inside those namespaces; each host has a multicast route on its veth
so mDNS works. Everything is deleted on exit, on error, and at interpreter exit.

    with lan(3) as net:
        procs = [h.exec([sys.executable, "-m", "some.module"]) for h in net.hosts]
        net.remove(net.hosts[2])    # the host vanishes: processes killed, namespace deleted

Requires root and ``ip`` (iproute2). :func:`unavailable_reason` says why not, for skips.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Host", "InNetns", "Lan", "lan", "unavailable_reason"]

_LIVE: set[str] = set()  # namespaces created by this process, for the atexit safety net


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None if they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    name = f"lsprobe{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"`ip netns add` fails: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False, timeout=10)
    return None


def _ip(*args: str, ns: str | None = None) -> str:
    argv = ["ip", *(("-n", ns) if ns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
    return done.stdout


@dataclass
class Host:
    """One namespace with address ``ip`` on ``eth0``; ``exec`` runs programs inside it.

    Each host gets its own working directory ``root`` with ``state``/``config``/``cache``
    subdirectories exported as ``LOCALSWARM_*_DIR``, and its own host name (a private
    UTS namespace via ``unshare --uts`` when available, and ``LOCALSWARM_HOSTNAME``).
    """

    name: str
    ns: str
    ip: str
    prefixlen: int
    root: Path
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment programs in this host get (proxies removed, dirs isolated)."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        for kind in ("state", "config", "cache"):
            env[f"LOCALSWARM_{kind.upper()}_DIR"] = str(self.root / kind)
        env["LOCALSWARM_HOSTNAME"] = self.name
        env.update(extra or {})
        return env

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside the namespace with this host's host name."""
        inner = list(argv)
        if shutil.which("unshare"):
            inner = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *inner]
        return ["ip", "netns", "exec", self.ns, *inner]

    def exec(self, argv: Sequence[str], *, env: dict[str, str] | None = None, **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in this host (``subprocess.Popen``); it is killed when the host goes.

        ``env`` entries are added to :meth:`env`. Runs in its own session, so the whole
        process group can be signalled.
        """
        popen_kw.setdefault("cwd", os.getcwd())
        proc = subprocess.Popen(self.argv(argv), env=self.env(env), start_new_session=True, **popen_kw)
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 30,
            **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` in this host to completion (``subprocess.run``, bounded by ``timeout``)."""
        kw.setdefault("cwd", os.getcwd())
        return subprocess.run(self.argv(argv), env=self.env(env), timeout=timeout, **kw)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 5) -> None:
        """Signal every process started here (their whole groups) and reap them."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)


@dataclass
class Lan:
    """The hosts and the bridge namespace of one test LAN."""

    hosts: list[Host]
    bridge_ns: str
    network: ipaddress.IPv4Network
    root: Path

    def remove(self, host: Host) -> None:
        """Make ``host`` vanish abruptly: SIGKILL its processes, delete its namespace."""
        host.kill(signal.SIGKILL)
        _delete_ns(host.ns)
        if host in self.hosts:
            self.hosts.remove(host)


def _delete_ns(ns: str) -> None:
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False, timeout=10)
    _LIVE.discard(ns)


@atexit.register
def _cleanup_leftovers() -> None:
    for ns in list(_LIVE):
        _delete_ns(ns)


@contextlib.contextmanager
def lan(n: int = 3, *, subnet: str = "10.231.0.0/24", prefix: str = "ls") -> Iterator[Lan]:
    """Build ``n`` hosts on one bridged, namespace-only LAN; tear everything down on exit."""
    network = ipaddress.ip_network(subnet)
    if not network.is_private or network.num_addresses < n + 2:
        raise ValueError(f"{subnet} must be a private subnet with room for {n} hosts")
    tag = uuid.uuid4().hex[:6]
    bridge_ns = f"{prefix}{tag}br"
    root = Path(tempfile.mkdtemp(prefix=f"netns-{tag}-"))
    hosts: list[Host] = []
    created: list[str] = []
    try:
        _ip("netns", "add", bridge_ns)
        created.append(bridge_ns)
        _LIVE.add(bridge_ns)
        _ip("link", "set", "lo", "up", ns=bridge_ns)
        _ip("link", "add", "br0", "type", "bridge", ns=bridge_ns)
        # Snooping would hold back multicast until someone sends an IGMP report; flood it.
        _ip("link", "set", "br0", "type", "bridge", "mcast_snooping", "0", ns=bridge_ns)
        _ip("link", "set", "br0", "up", ns=bridge_ns)
        addrs = list(network.hosts())
        for i in range(n):
            ns = f"{prefix}{tag}h{i}"
            _ip("netns", "add", ns)
            created.append(ns)
            _LIVE.add(ns)
            port = f"p{i}"
            _ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns, ns=bridge_ns)
            _ip("link", "set", port, "master", "br0", ns=bridge_ns)
            _ip("link", "set", port, "up", ns=bridge_ns)
            ip = str(addrs[i])
            _ip("link", "set", "lo", "up", ns=ns)
            _ip("addr", "add", f"{ip}/{network.prefixlen}", "brd", "+", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            _ip("route", "add", "224.0.0.0/4", "dev", "eth0", ns=ns)
            host_root = root / f"h{i}"
            for kind in ("state", "config", "cache"):
                (host_root / kind).mkdir(parents=True)
            hosts.append(Host(name=f"h{i}", ns=ns, ip=ip, prefixlen=network.prefixlen, root=host_root))
        yield Lan(hosts=list(hosts), bridge_ns=bridge_ns, network=network, root=root)
    finally:
        for host in hosts:
            with contextlib.suppress(Exception):
                host.kill(signal.SIGKILL)
        for ns in reversed(created):
            _delete_ns(ns)
        shutil.rmtree(root, ignore_errors=True)


_CLONE_NEWNET = 0x40000000


def _enter_netns(ns: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


class InNetns:
    """Run callables in a worker thread that entered ``host``'s network namespace (``setns``).

    Sockets created by those callables live inside the namespace, so a test (or bench) can
    send HTTP requests from inside a host without starting a process per request::

        with InNetns(host) as ns:
            status = ns.call(lambda: httpx.get(f"http://{host.ip}:8000/health").status_code)

    Only that thread changes namespace; the rest of the process stays where it was.
    """

    def __init__(self, host: Host) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{host.name}", initializer=_enter_netns,
                                        initargs=(host.ns,))

    def call(self, fn: Any, *args: Any, timeout: float | None = None) -> Any:
        """``fn(*args)`` inside the namespace; its result (or exception)."""
        return self._pool.submit(fn, *args).result(timeout)

    def close(self) -> None:
        """Stop the worker thread (pending calls are cancelled)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> InNetns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
