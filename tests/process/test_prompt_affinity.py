"""A conversation's next turn goes back to the instances holding its cached prefix (issue 15).

Over FAKE llama-servers (tests/fakes/fake_llama_server.py: it records the bodies it was
sent, which is how the test sees where each turn went). The prompt cache itself is
llama-server's; its effect on a real second turn is measured by bench/prompt_cache.py
(docs/benchmarks.md). Here: three instances, one slot each; a slow request holds every slot
while three conversations queue, so each is admitted with width 1 (adaptive width, issue 13),
the case where routing decides which instance pays the whole prompt again.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from localswarm.config import Settings
from tests.helpers import RunningGateway, fake_backend, free_tcp_port

SYSTEM = {"role": "system", "content": "You are opencode, an interactive CLI tool. " * 20}


def _turn(conv: str, n: int) -> list[dict[str, str]]:
    msgs = [SYSTEM, {"role": "user", "content": f"task {conv}: fix the bug"}]
    for i in range(1, n):
        msgs += [{"role": "assistant", "content": f"done step {i}"}, {"role": "user", "content": f"next {i}"}]
    return msgs


def _where(gw: RunningGateway) -> dict[str, set[tuple[str, int]]]:
    """Conversation → {(instance, turn)} from what each fake instance received."""
    out: dict[str, set[tuple[str, int]]] = {}
    for inst in gw.supervisor.instances:
        for body in httpx.get(inst.base_url + "/fake/last_bodies", headers=inst.auth_headers()).json():
            first_user = body["messages"][1]["content"]
            conv = first_user.split()[1].rstrip(":")
            out.setdefault(conv, set()).add((inst.name, (len(body["messages"]) - 2) // 2 + 1))
    return out


def _round(gw: RunningGateway, turn: int, convs: list[str]) -> list[int]:
    """A blocker takes every slot; the conversations queue behind it; their widths."""
    widths: list[int] = []

    def send(conv: str, n: int) -> None:
        with gw.client(timeout=60) as c:
            r = c.post("/v1/chat/completions", json={"model": "swarm", "messages": _turn(conv, n),
                                                     "max_tokens": 8})
            assert r.status_code == 200, r.text
            if conv in convs:
                widths.append(r.json()["localswarm"]["width"])

    blocker = threading.Thread(target=send, args=(f"blocker{turn}", 1))
    blocker.start()
    deadline = time.monotonic() + 20
    while gw.app.state.gateway.queue.used < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    threads = [threading.Thread(target=send, args=(c, turn)) for c in convs]
    for t in threads:
        t.start()
    for t in [blocker, *threads]:
        t.join()
    return widths


def test_second_turn_goes_to_the_instances_of_the_first(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DELAY", "1.5")
    settings = Settings(port=free_tcp_port(), parallel=1, keepalive_interval=0.5)
    with RunningGateway(settings, fake_backend(tmp_path, parallel=1), instances=3) as gw:
        assert _round(gw, 1, ["a", "b", "c"]) == [1, 1, 1]
        # turn 2 arrives in the other order: least-busy alone would not keep the pairing
        assert _round(gw, 2, ["c", "b", "a"]) == [1, 1, 1]
        where = _where(gw)
        affinity = gw.app.state.gateway.affinity
    print(where)
    # admitted together, the three first turns spread over the three instances
    assert len({name for conv in "abc" for name, turn in where[conv] if turn == 1}) == 3
    for conv in "abc":
        first = {name for name, turn in where[conv] if turn == 1}
        second = {name for name, turn in where[conv] if turn == 2}
        assert len(first) == 1 and second == first, (conv, where[conv])
    assert affinity.hits == 3
