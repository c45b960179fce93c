"""Routing a conversation back to the instances that hold its cached prefix (issue 15)."""

from __future__ import annotations

from types import SimpleNamespace

from localswarm.gateway.affinity import Affinity, conversation_key

SYSTEM = {"role": "system", "content": "You are opencode."}


def _inst(name: str, in_flight: int = 0) -> SimpleNamespace:
    return SimpleNamespace(name=name, stats=SimpleNamespace(in_flight=in_flight))


def _body(task: str, turns: int = 1, tools: list | None = None) -> dict:
    msgs = [SYSTEM, {"role": "user", "content": task}]
    for i in range(1, turns):
        msgs += [{"role": "assistant", "content": f"step {i}"}, {"role": "user", "content": f"more {i}"}]
    return {"messages": msgs, "tools": tools or []}


def test_a_conversation_keeps_its_key_across_turns() -> None:
    assert conversation_key(_body("fix a", 1)) == conversation_key(_body("fix a", 3))
    assert conversation_key(_body("fix a")) != conversation_key(_body("fix b"))
    assert conversation_key(_body("fix a")) != conversation_key(_body("fix a", tools=[{"type": "function"}]))
    assert conversation_key({"prompt": "legacy"}) is None


def test_next_turn_goes_where_the_last_went_even_when_busier() -> None:
    insts = [_inst("i0"), _inst("i1"), _inst("i2")]
    aff = Affinity()
    first = aff.choose(insts, 1, _body("fix a"))
    insts = [_inst(i.name, in_flight=2 if i.name == first[0].name else 0) for i in insts]
    assert aff.choose(insts, 1, _body("fix a", 2))[0].name == first[0].name
    assert aff.hits == 1
    # a new conversation: the least busy, never the loaded one
    assert aff.choose(insts, 1, _body("other"))[0].name != first[0].name


def test_requests_admitted_together_spread_out() -> None:
    """Nothing is in flight yet for any of them: ties go to the least recently chosen."""
    insts = [_inst("i0"), _inst("i1"), _inst("i2")]
    aff = Affinity()
    names = [aff.choose(insts, 1, _body(t))[0].name for t in ("a", "b", "c")]
    assert sorted(names) == ["i0", "i1", "i2"]


def test_full_width_asks_everyone_and_memory_is_bounded() -> None:
    insts = [_inst("i0"), _inst("i1")]
    aff = Affinity(size=2)
    assert [i.name for i in aff.choose(insts, 2, _body("a"))] == ["i0", "i1"]
    aff.choose(insts, 1, _body("b"))
    aff.choose(insts, 1, _body("c"))
    assert aff.served(conversation_key(_body("a"))) == ()  # the oldest was dropped
    assert aff.served(conversation_key(_body("c")))
