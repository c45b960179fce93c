"""Peer table, advert fields, node id, static peers and the UDP fallback (loopback only).

mDNS itself is exercised across network namespaces in
``tests/integration/test_federation_netns.py``: multicast never leaves this machine's
namespaces in tests.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from localswarm.federation.advert import Advert, instance_name, load_node_id, parse_txt
from localswarm.federation.discovery import Discovery, parse_static_peer
from localswarm.federation.table import Peer, PeerTable
from localswarm.federation.udp import decode_datagram, encode_datagram


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def recorder(table: PeerTable) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    table.add_listener(lambda ev, p: events.append((ev, p.key)))
    return events


def test_table_added_updated_removed() -> None:
    """Events fire on real changes only; a peer leaves when its last source drops it."""
    table = PeerTable(self_node_id="me")
    events = recorder(table)
    p = Peer(node_id="a", host="10.0.0.2", port=8080, model="m1", instances=2)
    assert table.upsert(p, "mdns") == "added"
    assert table.upsert(p, "mdns") is None  # refresh, nothing changed
    assert table.upsert(Peer(node_id="a", host="10.0.0.2", port=8080, model="m1", instances=3), "udp") == "updated"
    table.remove("a", "mdns")
    assert "a" in table  # udp still vouches for it
    table.remove("a", "udp")
    assert events == [("added", "a"), ("updated", "a"), ("removed", "a")]


def test_table_ignores_itself() -> None:
    table = PeerTable(self_node_id="me")
    assert table.upsert(Peer(node_id="me", host="10.0.0.1", port=1), "mdns") is None
    assert len(table) == 0


def test_incompatible_version_is_kept_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    """A peer with another protocol version is listed as incompatible, with a warning."""
    table = PeerTable()
    with caplog.at_level(logging.WARNING):
        table.upsert(Peer(node_id="old", host="10.0.0.3", port=8080, version=0, name="old:8080"), "mdns")
    peer = table.get("old")
    assert peer is not None and not peer.compatible and peer.to_dict()["compatible"] is False
    assert "protocol v0" in caplog.text


def test_static_peer_folds_into_discovered_one() -> None:
    """Once mDNS reveals the node id behind a static address, one entry remains."""
    table = PeerTable()
    events = recorder(table)
    table.upsert(Peer(node_id="", host="10.0.0.5", port=8080, version=None), "static")
    table.upsert(Peer(node_id="n5", host="10.0.0.5", port=8080), "mdns")
    assert [p.key for p in table] == ["n5"]
    assert table.get("n5").sources == frozenset({"static", "mdns"})  # type: ignore[union-attr]
    assert events == [("added", "static:10.0.0.5:8080"), ("removed", "static:10.0.0.5:8080"), ("added", "n5")]


def test_expire() -> None:
    clock = Clock()
    table = PeerTable(clock=clock)
    table.upsert(Peer(node_id="u", host="10.0.0.6", port=1), "udp")
    clock.now = 5
    assert table.expire("udp", 10) == []
    clock.now = 11
    assert [p.key for p in table.expire("udp", 10)] == ["u"]


def test_node_id_is_persistent(tmp_path: Path) -> None:
    """Created once under the state dir, then reused; a corrupt file is an error."""
    first = load_node_id()
    assert len(first) == 32 and load_node_id() == first
    bad = tmp_path / "bad"
    bad.write_text("nope")
    with pytest.raises(RuntimeError, match="32 hex"):
        load_node_id(bad)


def test_instance_name_is_sanitised() -> None:
    assert instance_name("box", 8080) == "box:8080"
    assert instance_name("box.lan.example", 8080) == "box-lan-example:8080"
    long = instance_name("x" * 100, 65535)
    assert len(long.encode()) <= 63 and long.endswith(":65535")


def test_txt_round_trip_and_lenient_parse() -> None:
    advert = Advert(node_id="n", name="h:1", port=1, model="m", instances=3, hw="4cpu", auth=True)
    fields = parse_txt({k.encode(): v.encode() for k, v in advert.txt().items()})
    assert fields == {"version": 1, "node_id": "n", "model": "m", "instances": 3, "hw": "4cpu", "auth": True}
    assert parse_txt({b"node": b"n", b"v": b"x"})["version"] == -1  # unparsable -> incompatible, not dropped


def test_a_mode2_worker_announces_its_relay_port_memory_and_backend() -> None:
    advert = Advert(node_id="n", name="w:8000", port=8000, rpc_port=50052, rpc_memory=6 * 2**30, rpc_backend="cuda")
    fields = parse_txt({k.encode(): v.encode() for k, v in advert.txt().items()})
    assert (fields["rpc_port"], fields["rpc_memory"], fields["rpc_backend"]) == (50052, 6 * 2**30, "cuda")
    peer = Peer(host="10.0.0.2", port=8000, **fields)  # type: ignore[arg-type]
    assert peer.rpc_only and peer.to_dict()["rpc_port"] == 50052  # lends memory, never asked to vote
    body = decode_datagram(encode_datagram(advert))
    assert body is not None and body["rpc"] == "50052"  # the UDP fallback carries the same fields


def test_datagram_codec() -> None:
    advert = Advert(node_id="n", name="h:1", port=8080)
    body = decode_datagram(encode_datagram(advert, "bye"))
    assert body is not None and body["type"] == "bye" and body["node"] == "n"
    for junk in (b"", b"{}", b"[1]", b'{"magic": "localswarm", "type": "announce", "port": 0, "node": "n"}'):
        assert decode_datagram(junk) is None


def test_parse_static_peer() -> None:
    assert parse_static_peer("10.0.0.2:9000") == ("10.0.0.2", 9000)
    # No port: the gateway's default port, which every peer listens on unless told otherwise.
    from localswarm.config import Settings

    assert parse_static_peer("box") == ("box", Settings().port) == ("box", 8000)
    assert parse_static_peer("[fe80::2]") == ("fe80::2", 8000)
    assert parse_static_peer("[fe80::1]:81") == ("fe80::1", 81)
    with pytest.raises(ValueError):
        parse_static_peer("box:http")


async def test_static_peers_are_listed() -> None:
    async with Discovery(port=8080, node_id="a" * 32, mdns=False, static_peers=["10.0.0.7:9000"]) as disco:
        (peer,) = disco.table.snapshot()
    assert peer.key == "static:10.0.0.7:9000" and peer.sources == frozenset({"static"})
    # `--peer box` (no port): the gateway's default port 8000, even on a node serving elsewhere.
    async with Discovery(port=8080, node_id="a" * 32, mdns=False, static_peers=["10.0.0.8"]) as disco:
        (peer,) = disco.table.snapshot()
    assert (peer.host, peer.port) == ("10.0.0.8", 8000) and peer.url == "http://10.0.0.8:8000"


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(predicate, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_udp_fallback_on_loopback() -> None:
    """Two nodes find each other by datagram, see updates, and drop each other on bye."""
    pa, pb = udp_port(), udp_port()
    common = {"mdns": False, "udp": True, "udp_bind": "127.0.0.1", "udp_interval_s": 0.5, "hw": "test"}
    a = Discovery(port=8001, node_id="a" * 32, hostname="a", udp_port=pa, udp_targets=[f"127.0.0.1:{pb}"], **common)
    b = Discovery(port=8002, node_id="b" * 32, hostname="b", udp_port=pb, udp_targets=[f"127.0.0.1:{pa}"], **common)
    async with a:
        async with b:
            await wait_until(lambda: "b" * 32 in a.table and "a" * 32 in b.table, timeout=2.0)
            peer = a.table.get("b" * 32)
            assert peer is not None and peer.url == "http://127.0.0.1:8002" and peer.name == "b:8002"
            await b.update(instances=7)
            await wait_until(lambda: a.table.get("b" * 32).instances == 7)  # type: ignore[union-attr]
        await wait_until(lambda: "b" * 32 not in a.table)
