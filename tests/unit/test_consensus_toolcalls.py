"""Tool-call voting: canonical arguments, noise, parallel calls, call vs no call, deltas."""

from __future__ import annotations

import json

import pytest

from localswarm.consensus import (
    Candidate,
    assemble_stream_deltas,
    canonical_arguments,
    quorum_reached,
    tool_calls_to_stream_deltas,
    vote,
)


def call(name: str, arguments: str | dict, id: str = "") -> dict:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": id or f"call_{name}", "type": "function", "function": {"name": name, "arguments": args}}


def tc(i: int, *calls: dict, text: str = "", latency: float = 0.0) -> Candidate:
    return Candidate(
        id=f"inst-{i}", text=text, tool_calls=list(calls), finish_reason="tool_calls", latency_s=latency
    )


def args_of(result_calls: list[dict], k: int = 0) -> dict:
    return json.loads(result_calls[k]["function"]["arguments"])


# ---------------------------------------------------------------- canonical arguments


def test_canonical_arguments_ignore_key_order_and_whitespace() -> None:
    a = canonical_arguments('{"filePath": "/repo/app.py", "limit": 200}')
    b = canonical_arguments('{ "limit" : 200.0 ,\n  "filePath":"/repo/app.py" }')
    assert a[0] == b[0]
    assert a[2] and b[2]
    c = canonical_arguments('{"command": "pytest   -q\\n", "description": " Run tests"}')
    d = canonical_arguments('{"description": "Run tests", "command": "pytest -q"}')
    assert c[0] == d[0]


def test_canonical_arguments_empty_invalid_and_repairable() -> None:
    assert canonical_arguments("")[1] == {} and canonical_arguments("")[2]
    key, value, valid, repaired = canonical_arguments('{"path": "a.py"')
    assert not valid and value is None and key.startswith("\x00invalid:")
    key, value, valid, repaired = canonical_arguments("{'path': 'a.py',}")
    assert valid and repaired and value == {"path": "a.py"}
    key, value, valid, repaired = canonical_arguments('```json\n{"path": "a.py",}\n```')
    assert valid and repaired and value == {"path": "a.py"}


# ---------------------------------------------------------------- voting under noise


BASH_ARGS = [
    '{"command": "python -m pytest -q tests/unit", "description": "Run the unit tests"}',
    '{"description": "Run the unit tests", "command": "python -m pytest -q tests/unit"}',
    '{ "command" : "python -m pytest -q tests/unit",\n  "description" : "Run the unit tests" }',
    '{"command": "python -m pytest -q  tests/unit ", "description": "Runs the unit tests"}',
    '{"command": "python -m pytest -q tests/unit", "description": "Run unit tests"}',
]


def test_noise_in_whitespace_and_key_order_keeps_exact_majority() -> None:
    cs = [tc(i, call("bash", a)) for i, a in enumerate(BASH_ARGS)]
    r = vote(cs)
    assert r.tool_calls is not None and len(r.tool_calls) == 1
    assert r.tool_calls[0]["function"]["name"] == "bash"
    assert args_of(r.tool_calls) == {
        "command": "python -m pytest -q tests/unit",
        "description": "Run the unit tests",
    }
    # Three of five are exactly equal after canonicalisation: one is returned verbatim.
    assert r.synthesized is False
    assert r.tool_calls[0]["function"]["arguments"] == BASH_ARGS[r.winner]
    assert r.winner in (0, 1, 2)
    assert sorted(r.cluster) == [0, 1, 2, 3, 4]
    assert r.confidence > 0.8


def test_small_string_edits_are_resolved_per_argument() -> None:
    variants = [
        {"filePath": "/repo/src/app.py", "oldString": "return a+b", "newString": "return a + b"},
        {"filePath": "/repo/src/app.py", "oldString": "return a+b", "newString": "return a + b  "},
        {"filePath": "/repo/src/app.py", "oldString": "return a+b ", "newString": "return (a + b)"},
        {"filePath": "/repo/src/app.py", "oldString": "return a+b", "newString": "return a +b"},
        {"filePath": "/repo/src/ap.py", "oldString": "return a+b", "newString": "return a + b"},
    ]
    cs = [tc(i, call("edit", v)) for i, v in enumerate(variants)]
    r = vote(cs)
    assert r.tool_calls is not None
    got = args_of(r.tool_calls)
    assert got["filePath"] == "/repo/src/app.py"
    assert got["oldString"] == "return a+b"
    assert got["newString"].strip() == "return a + b"
    assert list(got) == ["filePath", "oldString", "newString"]


def test_per_argument_medoid_can_synthesise_from_several_candidates() -> None:
    variants = [
        {"pattern": "def vote", "path": "/repo/localswarm", "include": "*.py"},
        {"pattern": "def vote", "path": "/repo/localswarm/", "include": "*.py"},
        {"pattern": "def vote(", "path": "/repo/localswarm", "include": "*.pyi"},
        {"pattern": "def  vote", "path": "/repo", "include": "*.py"},
    ]
    cs = [tc(i, call("grep", v)) for i, v in enumerate(variants)]
    r = vote(cs)
    got = args_of(r.tool_calls)  # type: ignore[arg-type]
    assert got == {"pattern": "def vote", "path": "/repo/localswarm", "include": "*.py"}
    assert json.loads(json.dumps(r.tool_calls))  # plain JSON


def test_function_name_majority_wins() -> None:
    cs = [
        tc(0, call("read", {"filePath": "/repo/README.md"})),
        tc(1, call("read", {"filePath": "/repo/README.md "})),
        tc(2, call("glob", {"pattern": "**/*.md"})),
        tc(3, call("read", {"filePath": "/repo/README.md"})),
    ]
    r = vote(cs)
    assert r.tool_calls[0]["function"]["name"] == "read"  # type: ignore[index]
    assert sorted(r.cluster) == [0, 1, 3]
    assert sorted(map(sorted, r.clusters)) == [[0, 1, 3], [2]]


def test_invalid_json_arguments_are_excluded() -> None:
    cs = [
        tc(0, call("read", '{"filePath": "/repo/a.py"')),
        tc(1, call("read", '{"filePath": "/repo/a.py"')),
        tc(2, call("read", {"filePath": "/repo/a.py"})),
    ]
    r = vote(cs)
    assert r.excluded == [0, 1]
    assert args_of(r.tool_calls) == {"filePath": "/repo/a.py"}  # type: ignore[arg-type]


def test_repaired_arguments_are_emitted_as_valid_json() -> None:
    r = vote([tc(0, call("read", "{'filePath': '/repo/a.py',}"))])
    assert json.loads(r.tool_calls[0]["function"]["arguments"]) == {"filePath": "/repo/a.py"}  # type: ignore[index]


# ---------------------------------------------------------------- parallel calls


def test_parallel_calls_in_any_order_agree() -> None:
    a = call("read", {"filePath": "/repo/a.py"}, "c1")
    b = call("read", {"filePath": "/repo/b.py"}, "c2")
    g = call("glob", {"pattern": "tests/**/*.py"}, "c3")
    cs = [
        tc(0, a, b, g),
        tc(1, g, b, a),
        tc(2, b, a, call("glob", {"pattern": "tests/**/*.py "})),
        tc(3, a),
    ]
    r = vote(cs)
    assert sorted(r.cluster) == [0, 1, 2]
    assert r.tool_calls is not None and len(r.tool_calls) == 3
    names = sorted(c["function"]["name"] for c in r.tool_calls)
    assert names == ["glob", "read", "read"]
    paths = sorted(args_of(r.tool_calls, k).get("filePath", "") for k in range(3))
    assert paths == ["", "/repo/a.py", "/repo/b.py"]
    assert len({c["id"] for c in r.tool_calls}) == 3


def test_parallel_calls_synthesised_per_slot() -> None:
    # No single candidate has both winning values: the answer combines candidates.
    pairs = [("a.py", "ls -l"), ("a.py", "ls -lh"), ("a.pyc", "ls -la"), ("a.pyx", "ls -la"), ("a.py", "ls -lt")]
    cs = [
        tc(i, call("read", {"filePath": f"/repo/{p}"}), call("bash", {"command": c}))
        for i, (p, c) in enumerate(pairs)
    ]
    r = vote(cs)
    got = {c["function"]["name"]: json.loads(c["function"]["arguments"]) for c in r.tool_calls}  # type: ignore[union-attr]
    assert got == {"read": {"filePath": "/repo/a.py"}, "bash": {"command": "ls -la"}}
    assert r.synthesized is True
    assert r.metadata(cs)["synthesized"] is True
    assert [c["function"]["name"] for c in r.tool_calls] == ["read", "bash"]  # type: ignore[union-attr]


# ---------------------------------------------------------------- call vs no call


def test_no_call_majority_beats_calls() -> None:
    text = "The tests pass; there is nothing left to change."
    cs = [
        Candidate("inst-0", text),
        Candidate("inst-1", text.replace("nothing left", "nothing more")),
        tc(2, call("bash", {"command": "pytest"})),
        Candidate("inst-3", text),
    ]
    r = vote(cs)
    assert r.tool_calls is None
    assert r.winner in (0, 1, 3)
    assert sorted(r.cluster) == [0, 1, 3]


def test_call_majority_beats_text() -> None:
    cs = [
        Candidate("inst-0", "Let me look at the file first."),
        tc(1, call("read", {"filePath": "/repo/a.py"}), text="Reading the file."),
        tc(2, call("read", {"filePath": "/repo/a.py"})),
    ]
    r = vote(cs)
    assert r.tool_calls is not None
    assert r.winner in (1, 2)
    assert r.confidence == pytest.approx(2 / 3)


def test_tie_between_call_and_no_call_goes_to_the_call() -> None:
    cs = [Candidate("inst-0", "Done."), tc(1, call("bash", {"command": "make test"}))]
    assert vote(cs).tool_calls is not None


def test_quorum_on_tool_calls() -> None:
    c = call("read", {"filePath": "/repo/a.py"})
    assert quorum_reached([tc(0, c), tc(1, c), tc(2, c)], 5)
    assert not quorum_reached([tc(0, c), tc(1, c), Candidate("inst-2", "no")], 5)


# ---------------------------------------------------------------- streaming form


def test_deltas_reassemble_into_the_same_tool_calls() -> None:
    calls = [
        call("edit", {"filePath": "/repo/a.py", "oldString": "x = 1\n", "newString": "x = 2  # ünïcode\n"}, "call_1"),
        call("bash", {"command": "pytest -q", "description": "Run tests"}, "call_2"),
        call("todoread", "", "call_3"),
    ]
    for size in (1, 7, 64, 0):
        deltas = tool_calls_to_stream_deltas(calls, chunk_chars=size)
        assert assemble_stream_deltas(deltas) == calls
    deltas = tool_calls_to_stream_deltas(calls, chunk_chars=8)
    first = deltas[0]["tool_calls"][0]
    assert first == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "edit", "arguments": ""},
    }
    rest = deltas[1]["tool_calls"][0]
    assert set(rest) == {"index", "function"} and set(rest["function"]) == {"arguments"}
    assert [d["tool_calls"][0]["index"] for d in deltas] == sorted(d["tool_calls"][0]["index"] for d in deltas)


def test_voted_calls_stream_and_reassemble() -> None:
    cs = [tc(i, call("bash", a)) for i, a in enumerate(BASH_ARGS)]
    r = vote(cs)
    assert assemble_stream_deltas(tool_calls_to_stream_deltas(r.tool_calls)) == r.tool_calls  # type: ignore[arg-type]


def test_deltas_parse_with_openai_types_when_available() -> None:
    types = pytest.importorskip("openai.types.chat")
    calls = [call("read", {"filePath": "/repo/a.py"}, "call_9")]
    for d in tool_calls_to_stream_deltas(calls, chunk_chars=5):
        chunk = types.ChatCompletionChunk.model_validate(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "swarm",
                "choices": [{"index": 0, "delta": d, "finish_reason": None}],
            }
        )
        assert chunk.choices[0].delta.tool_calls[0].index == 0
