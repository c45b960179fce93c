"""Federation wired into the real gateway (uvicorn on loopback, FAKE llama-server processes).

Auth through the real gateway (missing secret, wrong secret, replay, hop limit), the
endpoints' absence when federation is off, the cross-vote in ``vote_round`` (a peer's
answer can win, streamed requests get it, a failing peer is left out and marked down),
and the CLI surface (``up --federate`` preflight, ``peers``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from localswarm import cli
from localswarm.config import Settings
from localswarm.federation import SecretError, sign
from localswarm.federation.node import preflight
from tests.helpers import RunningGateway, fake_backend, free_tcp_port

SECRET = "glue-test-secret-0123456789abcdef"
CHAT = {"messages": [{"role": "user", "content": "add two numbers"}], "max_tokens": 16}


def _settings(port: int, **kw: Any) -> Settings:
    base: dict[str, Any] = {"port": port, "instances": 2, "health_interval": 0.2, "mdns": False,
                            "peer_timeout": 5.0, "quorum": 1.0, "peer_probe_interval": 0.2}
    base.update(kw)
    return Settings(**base)


def _start(stack: ExitStack, tmp: Path, name: str, monkeypatch: pytest.MonkeyPatch, settings: Settings,
           replies: list[Any], instances: int = 2) -> RunningGateway:
    """One gateway with its own state dir (own node id) and its own FAKE replies."""
    d = tmp / name
    d.mkdir()
    monkeypatch.setenv("LOCALSWARM_STATE_DIR", str(d / "state"))
    monkeypatch.setenv("FAKE_REPLIES", json.dumps(replies))
    return stack.enter_context(RunningGateway(settings, fake_backend(d), instances=instances))


def _signed(method: str, path: str, body: bytes, secret: str) -> dict[str, str]:
    return {**sign(method, path, body, secret.encode()), "x-localswarm-hops": "1", "content-type": "application/json"}


@pytest.fixture
def single(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningGateway]:
    monkeypatch.setenv("LOCALSWARM_FEDERATION_SECRET", SECRET)
    with ExitStack() as stack:
        yield _start(stack, tmp_path, "a", monkeypatch, _settings(free_tcp_port(), federate=True), ["def add(a, b): return a + b"])


# -- endpoints and auth through the real gateway ------------------------------------------


def test_endpoints_do_not_exist_when_federation_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSWARM_FEDERATION_SECRET", SECRET)  # a secret alone does not enable anything
    with ExitStack() as stack:
        gw = _start(stack, tmp_path, "off", monkeypatch, _settings(free_tcp_port()), ["hi"])
        with gw.client() as c:
            body = json.dumps({"v": 1, "request_id": "r1", "request": CHAT}).encode()
            assert c.post("/v1/federation/vote", content=body,
                          headers=_signed("POST", "/v1/federation/vote", body, SECRET)).status_code == 404
            assert c.get("/v1/federation/info").status_code == 404
            assert c.get("/v1/federation/health").status_code == 404
            assert "federation" not in c.get("/localswarm/status").json()
            meta = c.post("/v1/chat/completions", json=CHAT).json()["localswarm"]
            assert "federation" not in meta and meta.get("mode") != "federated"


def test_signed_vote_is_answered_by_the_local_swarm(single: RunningGateway) -> None:
    with single.client() as c:
        node_id = c.get("/localswarm/status").json()["federation"]["node_id"]
        body = json.dumps({"v": 1, "request_id": "req-1", "request": CHAT}).encode()
        resp = c.post("/v1/federation/vote", content=body, headers=_signed("POST", "/v1/federation/vote", body, SECRET))
        assert resp.status_code == 200, resp.text
        reply = resp.json()
        assert reply["node_id"] == node_id and reply["request_id"] == "req-1"
        assert reply["n"] == 2 and reply["cluster_size"] == 2
        assert reply["message"]["content"] == "def add(a, b): return a + b"
        info = c.get("/v1/federation/info", headers=_signed("GET", "/v1/federation/info", b"", SECRET)).json()
        assert info["node_id"] == node_id and info["instances"] == 2 and info["auth"] is True
        health = c.get("/v1/federation/health", headers=_signed("GET", "/v1/federation/health", b"", SECRET))
        assert health.status_code == 200 and health.json()["ready_instances"] == 2


def test_missing_secret_wrong_secret_and_replay_are_refused(single: RunningGateway) -> None:
    body = json.dumps({"v": 1, "request_id": "req-2", "request": CHAT}).encode()
    with single.client() as c:
        unsigned = c.post("/v1/federation/vote", content=body, headers={"content-type": "application/json"})
        assert unsigned.status_code == 401 and "unsigned" in unsigned.text
        wrong = c.post("/v1/federation/vote", content=body,
                       headers=_signed("POST", "/v1/federation/vote", body, "another-secret-0123456789abcdef"))
        assert wrong.status_code == 401 and "bad signature" in wrong.text
        assert c.get("/v1/federation/info").status_code == 401
        headers = _signed("POST", "/v1/federation/vote", body, SECRET)
        assert c.post("/v1/federation/vote", content=body, headers=headers).status_code == 200
        replay = c.post("/v1/federation/vote", content=body, headers=headers)
        assert replay.status_code == 401 and "replayed" in replay.text
        tampered = c.post("/v1/federation/vote", content=body.replace(b"req-2", b"req-3"),
                          headers=_signed("POST", "/v1/federation/vote", body, SECRET))
        assert tampered.status_code == 401
        hops = {**_signed("POST", "/v1/federation/vote", body, SECRET), "x-localswarm-hops": "2"}
        assert c.post("/v1/federation/vote", content=body, headers=hops).status_code == 508


def test_preflight_requires_a_secret_off_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALSWARM_FEDERATION_SECRET", raising=False)
    assert preflight(Settings(host="10.1.2.3")) is None  # federation off: nothing needed
    assert preflight(Settings(federate=True)) is None  # loopback: allowed without a secret
    with pytest.raises(SecretError, match="shared secret"):
        preflight(Settings(federate=True, host="10.1.2.3"))
    f = tmp_path / "secret"
    f.write_text(SECRET)
    f.chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        preflight(Settings(federate=True, host="0.0.0.0", federation_secret_file=str(f)))
    f.chmod(0o600)
    assert preflight(Settings(federate=True, host="0.0.0.0", federation_secret_file=str(f))) == SECRET.encode()


def test_cli_up_federate_on_lan_without_secret_fails_fast(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LOCALSWARM_FEDERATION_SECRET"}
    out = subprocess.run([sys.executable, "-m", "localswarm", "up", "--federate", "--host", "10.231.99.1",
                          "--peer", "10.231.99.2:8000"], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "shared secret" in out.stderr and "LOCALSWARM_FEDERATION_SECRET" in out.stderr


# -- the cross-vote through the gateway ---------------------------------------------------


def test_a_peer_answer_can_win_and_streams_in_consensus_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A has 2 instances saying X; B (3) and C (3) say Y: the coordinator A answers Y."""
    monkeypatch.setenv("LOCALSWARM_FEDERATION_SECRET", SECRET)
    ports = [free_tcp_port() for _ in range(3)]
    x, y = "def add(a, b): return a + b", "def add(x, y):\n    return x + y  # the sum"
    with ExitStack() as stack:
        gws = []
        for name, port, replies, n in (("a", ports[0], [x], 2), ("b", ports[1], [y], 3), ("c", ports[2], [y], 3)):
            peers = [f"127.0.0.1:{p}" for p in ports if p != port]
            gws.append(_start(stack, tmp_path, name, monkeypatch, _settings(port, federate=True, peers=peers),
                              replies, instances=n))
        a = gws[0]
        with a.client() as c:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:  # static peers learn their node ids from /info
                peers = c.get("/localswarm/status").json()["federation"]["peers"]
                if len(peers) == 2 and all(p["node_id"] and p["state"] == "up" for p in peers):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"peers not up: {peers}")
            resp = c.post("/v1/chat/completions", json=CHAT)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            meta = body["localswarm"]
            assert body["choices"][0]["message"]["content"] == y
            assert meta["mode"] == "federated" and len(meta["nodes"]) == 3
            assert meta["votes"] == 6 and meta["n"] == 8 and meta["confidence"] == 0.75
            assert meta["local"]["winner"] in ("inst-0", "inst-1") and meta["winner"] not in ("inst-0", "inst-1")
            assert [n["agreed"] for n in meta["nodes"]].count(True) == 2
            assert resp.headers["x-localswarm-votes"] == "6/8"

            stream = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
            chunks = [json.loads(line[5:]) for line in stream.text.splitlines()
                      if line.startswith("data:") and line.strip() != "data: [DONE]"]
            text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch.get("choices"))
            assert text == y
            final = [ch["localswarm"] for ch in chunks if ch.get("localswarm")]
            assert final and final[-1]["mode"] == "federated" and len(final[-1]["nodes"]) == 3

            # A request that says it already took a hop is answered locally only (never forwarded).
            local = c.post("/v1/chat/completions", json=CHAT, headers={"x-localswarm-hops": "1"}).json()
            assert local["choices"][0]["message"]["content"] == x and "federation" not in local["localswarm"]

            # /metrics: the peer table and the latency of the calls made to the peers.
            from prometheus_client.parser import text_string_to_metric_families

            families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
            peers_gauge = {s.labels["state"]: s.value for s in families["localswarm_peers"].samples}
            assert peers_gauge == {"known": 2, "available": 2}
            counts = {s.labels["peer"]: s.value for s in families["localswarm_peer_request_duration_seconds"].samples
                      if s.name.endswith("_count")}
            assert set(counts) == {f"http://127.0.0.1:{p}" for p in ports[1:]} and all(v >= 1 for v in counts.values())

        # `localswarm peers` renders the coordinator's table.
        status = json.loads(json.dumps(a.app.state.gateway.status()))
        monkeypatch.setattr(cli.runner, "fetch_status", lambda timeout=5.0: status)
        out = CliRunner().invoke(cli.main, ["peers"])
        assert out.exit_code == 0, out.output
        for port in ports[1:]:
            assert f"127.0.0.1:{port}" in out.output
        assert out.output.count("up") >= 2


def test_a_failing_peer_is_left_out_and_marked_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSWARM_FEDERATION_SECRET", SECRET)
    dead = free_tcp_port()  # nothing listens there
    with ExitStack() as stack:
        gw = _start(stack, tmp_path, "a", monkeypatch,
                    _settings(free_tcp_port(), federate=True, peers=[f"127.0.0.1:{dead}"]), ["def f(): pass"])
        with gw.client() as c:
            t0 = time.monotonic()
            resp = c.post("/v1/chat/completions", json=CHAT)
            assert resp.status_code == 200 and time.monotonic() - t0 < 5.0
            meta = resp.json()["localswarm"]
            if meta.get("mode") == "federated":  # asked before the probes marked it down
                assert len(meta["nodes"]) == 1 and f"static:127.0.0.1:{dead}" in meta["federation"]["left_out"]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                peers = c.get("/localswarm/status").json()["federation"]["peers"]
                if peers and peers[0]["state"] == "down":
                    break
                time.sleep(0.1)
            assert peers[0]["state"] == "down" and peers[0]["error"]
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_peers_command_without_federation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.runner, "fetch_status", lambda timeout=5.0: {"model": "m", "instances": []})
    out = CliRunner().invoke(cli.main, ["peers"])
    assert out.exit_code == 1 and "federation is off" in out.output
