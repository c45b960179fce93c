"""Tool calls: canonical arguments, voting, and OpenAI streamed-delta form.

Voting order (after "call or no call", decided in ``vote``):

1. the function-name signature: the sorted multiset of names, so parallel calls in a
   different order still agree;
2. exact arguments: if a strict majority of that group has identical canonical
   arguments, the group's medoid among them is returned verbatim;
3. otherwise each argument is voted on its own: exact-value buckets first, then the
   medoid by character similarity. The result may combine several candidates.

Calls are aligned across candidates by sorting on (name, canonical arguments).
Nothing here ever executes a tool.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rapidfuzz.distance import Indel

from .cluster import cohesion, exact_buckets, medoid

__all__ = [
    "ParsedCall",
    "ToolVote",
    "assemble_stream_deltas",
    "canonical_arguments",
    "format_calls",
    "name_signature",
    "parse_tool_calls",
    "tool_calls_to_stream_deltas",
    "vote_tool_calls",
]

_INVALID = "\x00invalid:"
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


@dataclass(frozen=True)
class ParsedCall:
    """One tool call, parsed. ``key`` is the canonical JSON used for comparison."""

    id: str
    name: str
    arguments: str  # as emitted by the model
    value: Any  # parsed arguments (None when invalid)
    valid: bool
    repaired: bool  # parsed only after lenient repair: re-serialise on output
    key: str
    position: int  # index in the candidate's own list


def _norm_value(v: Any) -> Any:
    if isinstance(v, str):
        return " ".join(v.split())
    if isinstance(v, Mapping):
        return {str(k): _norm_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_norm_value(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _dumps_key(v: Any) -> str:
    return json.dumps(_norm_value(v), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _lenient_load(text: str) -> tuple[Any, bool]:
    """Try JSON, then JSON without fences / trailing commas, then a Python literal."""
    try:
        return json.loads(text), True
    except (ValueError, RecursionError):
        pass
    fixed = _TRAILING_COMMA.sub(r"\1", _FENCE.sub("", text))
    try:
        return json.loads(fixed), True
    except (ValueError, RecursionError):
        pass
    try:
        value = ast.literal_eval(fixed)
        json.dumps(value)
        return value, True
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        return None, False


def canonical_arguments(arguments: str | Mapping[str, Any] | None) -> tuple[str, Any, bool, bool]:
    """Canonical JSON of tool-call arguments.

    Returns ``(key, value, valid, repaired)``. ``key`` has sorted keys, no insignificant
    whitespace, whitespace runs inside strings collapsed and integral floats as ints;
    ``value`` is the parsed (un-normalised) arguments. Empty arguments mean ``{}``.
    Invalid JSON gives ``valid=False`` and a key built from the collapsed raw text.
    """
    if arguments is None:
        return _dumps_key({}), {}, True, False
    if isinstance(arguments, Mapping):
        return _dumps_key(arguments), dict(arguments), True, True
    text = str(arguments)
    if not text.strip():
        return _dumps_key({}), {}, True, False
    try:
        value = json.loads(text)
        return _dumps_key(value), value, True, False
    except (ValueError, RecursionError):
        pass
    value, ok = _lenient_load(text)
    if ok:
        return _dumps_key(value), value, True, True
    return _INVALID + " ".join(text.split()), None, False, False


def parse_tool_calls(tool_calls: Sequence[Mapping[str, Any]] | None) -> list[ParsedCall]:
    """Parse an OpenAI ``tool_calls`` list (tolerates missing ids/types, dict arguments)."""
    out: list[ParsedCall] = []
    for pos, call in enumerate(tool_calls or []):
        fn = call.get("function") or {}
        name = str(fn.get("name") or call.get("name") or "")
        raw = fn.get("arguments", call.get("arguments"))
        key, value, valid, repaired = canonical_arguments(raw)
        args_text = raw if isinstance(raw, str) else json.dumps(value or {}, ensure_ascii=False)
        out.append(
            ParsedCall(str(call.get("id") or ""), name, args_text, value, valid, repaired, key, pos)
        )
    return out


def name_signature(calls: Sequence[ParsedCall]) -> tuple[str, ...]:
    """Sorted multiset of function names: the identity of a (parallel) call set."""
    return tuple(sorted(c.name for c in calls))


def sorted_calls(calls: Sequence[ParsedCall]) -> list[ParsedCall]:
    """Calls in a canonical order (name, then canonical arguments), for pairwise comparison."""
    return sorted(calls, key=lambda c: (c.name, c.key))


def call_list_similarity(a: list[ParsedCall], b: list[ParsedCall]) -> float:
    """Similarity of two aligned call lists: mean similarity of their canonical arguments."""
    if not a and not b:
        return 1.0
    if len(a) != len(b):
        return 0.0
    total = 0.0
    for x, y in zip(a, b):
        total += 1.0 if x.key == y.key else Indel.normalized_similarity(x.key, y.key)
    return total / len(a)


def _value_text(v: Any) -> str:
    n = _norm_value(v)
    return n if isinstance(n, str) else json.dumps(n, sort_keys=True, ensure_ascii=False)


def _choose_value(items: list[tuple[int, Any]], rep: int) -> tuple[int, Any]:
    """Pick one (member, value): biggest exact bucket, then most central, then the representative's."""
    texts = [_value_text(v) for _, v in items]
    buckets = exact_buckets(texts)
    size = {i: len(b) for b in buckets for i in b}
    m = len(items)
    sim = np.ones((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            s = 1.0 if texts[i] == texts[j] else Indel.normalized_similarity(texts[i], texts[j])
            sim[i, j] = sim[j, i] = s
    totals = sim.sum(axis=1)
    best = max(
        range(m),
        key=lambda i: (size[i], round(float(totals[i]), 9), items[i][0] == rep, -i),
    )
    # Among equal values, prefer the representative's own spelling.
    for i in range(m):
        if texts[i] == texts[best] and items[i][0] == rep:
            return items[i]
    return items[best]


def _clean_call(call: ParsedCall, arguments: str, fallback_id: str) -> dict[str, Any]:
    return {
        "id": call.id or fallback_id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def _fallback_id(member: int, slot: int, name: str) -> str:
    return "call_" + hashlib.sha1(f"{member}:{slot}:{name}".encode()).hexdigest()[:24]


def format_calls(calls: Sequence[ParsedCall], member: int = 0) -> list[dict[str, Any]]:
    """Clean OpenAI ``tool_calls`` for one candidate's parsed calls, in their own order.

    Repaired arguments (fences, trailing commas, Python literals) are re-serialised as JSON.
    """
    out = []
    for c in sorted(calls, key=lambda c: c.position):
        args = json.dumps(c.value, ensure_ascii=False) if c.repaired else c.arguments
        out.append(_clean_call(c, args, _fallback_id(member, c.position, c.name)))
    return out


@dataclass(frozen=True)
class ToolVote:
    """Outcome of voting among candidates that made tool calls.

    ``groups`` are the name-signature groups (global indices) with ``group_cohesions``;
    ``group`` is the winner among them and ``representative`` its medoid.
    """

    tool_calls: list[dict[str, Any]]
    representative: int
    group: list[int]
    cohesion: float
    groups: list[list[int]]
    group_cohesions: list[float]
    synthesized: bool


def _synthesise(aligned: dict[int, list[ParsedCall]], group: list[int], rep: int) -> tuple[list[dict[str, Any]], bool]:
    rep_calls = aligned[rep]
    out: list[tuple[int, dict[str, Any]]] = []
    synthesized = False
    for k, rc in enumerate(rep_calls):
        slot = [(m, aligned[m][k]) for m in group]
        fid = _fallback_id(rep, rc.position, rc.name)
        if not all(isinstance(c.value, dict) for _, c in slot):
            m, c = _choose_value([(m, c.value if c.valid else c.key) for m, c in slot], rep)
            chosen = aligned[m][k]
            synthesized |= m != rep
            args = json.dumps(chosen.value, ensure_ascii=False) if chosen.repaired else chosen.arguments
            out.append((rc.position, _clean_call(rc, args, fid)))
            continue
        changed = False
        keys: list[str] = list(rc.value.keys())
        for _, c in slot:
            keys += [key for key in c.value if key not in keys]
        args_obj: dict[str, Any] = {}
        for key in keys:
            items = [(m, c.value[key]) for m, c in slot if key in c.value]
            present = len(items)
            if present * 2 < len(slot) or (present * 2 == len(slot) and key not in rc.value):
                changed |= key in rc.value
                continue
            m, value = _choose_value(items, rep)
            changed |= m != rep or key not in rc.value
            args_obj[key] = value
        synthesized |= changed
        if changed or rc.repaired:
            args = json.dumps(args_obj, ensure_ascii=False)
        else:
            args = rc.arguments
        out.append((rc.position, _clean_call(rc, args, fid)))
    out.sort(key=lambda t: t[0])
    return [c for _, c in out], synthesized


def vote_tool_calls(
    parsed: Mapping[int, Sequence[ParsedCall]],
    members: Sequence[int],
    latency: Sequence[float] | None = None,
) -> ToolVote:
    """Vote among ``members`` (global indices, each with a non-empty ``parsed`` list)."""
    if not members:
        raise ValueError("no tool-call candidates")
    members = list(members)
    aligned = {m: sorted_calls(parsed[m]) for m in members}
    n = max(members) + 1
    sim = np.eye(n)
    groups = [[members[i] for i in b] for b in exact_buckets([name_signature(parsed[m]) for m in members])]
    for g in groups:
        for a_i, a in enumerate(g):
            for b in g[a_i + 1 :]:
                sim[a, b] = sim[b, a] = call_list_similarity(aligned[a], aligned[b])
    cohs = [cohesion(sim, g) for g in groups]
    k = max(range(len(groups)), key=lambda i: (len(groups[i]), round(cohs[i], 9), -min(groups[i])))
    group = groups[k]
    rep = medoid(sim, group, prefer=latency)

    # Exact arguments held by a strict majority of the group: return one verbatim.
    exact = [[group[i] for i in b] for b in exact_buckets([tuple(c.key for c in aligned[m]) for m in group])]
    top = max(exact, key=len)
    if len(top) * 2 > len(group):
        winner = rep if rep in top else medoid(sim, top, prefer=latency)
        return ToolVote(format_calls(parsed[winner], winner), winner, group, cohs[k], groups, cohs, False)

    calls, synthesized = _synthesise(aligned, group, rep)
    if not synthesized:
        calls = format_calls(parsed[rep], rep)
    return ToolVote(calls, rep, group, cohs[k], groups, cohs, synthesized)


# ----------------------------------------------------------------------- streaming


def tool_calls_to_stream_deltas(
    tool_calls: Sequence[Mapping[str, Any]], *, chunk_chars: int = 64
) -> list[dict[str, Any]]:
    """OpenAI streamed form of ``tool_calls``: one ``delta`` dict per chunk.

    For each call: a first delta with ``index``, ``id``, ``type``, the function name and
    empty arguments, then the arguments in pieces of ``chunk_chars`` characters
    (``chunk_chars <= 0``: one piece). Put each returned dict in
    ``choices[0].delta`` of a ``chat.completion.chunk``; finish with
    ``finish_reason: "tool_calls"``.
    """
    deltas: list[dict[str, Any]] = []
    for i, call in enumerate(tool_calls):
        fn = call.get("function") or {}
        args = fn.get("arguments", "")
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        head = {
            "index": i,
            "id": call.get("id") or _fallback_id(0, i, str(fn.get("name", ""))),
            "type": "function",
            "function": {"name": fn.get("name", ""), "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        step = chunk_chars if chunk_chars > 0 else max(len(args), 1)
        for start in range(0, len(args), step):
            piece = args[start : start + step]
            deltas.append({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    return deltas


def assemble_stream_deltas(deltas: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rebuild whole ``tool_calls`` from streamed deltas (the inverse of the above)."""
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        for part in delta.get("tool_calls") or []:
            idx = int(part.get("index", 0))
            call = calls.setdefault(
                idx, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if part.get("id"):
                call["id"] = part["id"]
            if part.get("type"):
                call["type"] = part["type"]
            fn = part.get("function") or {}
            if fn.get("name"):
                call["function"]["name"] += fn["name"]
            if fn.get("arguments"):
                call["function"]["arguments"] += fn["arguments"]
    return [calls[i] for i in sorted(calls)]
