"""The ``exec`` vote: examples found in a request, answers run on them in the real sandbox,
the most examples passed wins (pure parts and the sandbox run; no model)."""

from __future__ import annotations

import asyncio
import json

import pytest

from localswarm.consensus import Candidate, vote
from localswarm.consensus.examples import answer_code, find_examples, parse_results, program, request_text
from localswarm.sandbox.check import checked_vote, examples_for, relevant_examples, run_examples

GOOD = "```python\ndef is_even(n):\n    return n % 2 == 0\n```"
GOOD_2 = "Here:\n```python\ndef is_even(k):\n    return not k % 2\n\nprint(is_even(3))\n```"
WRONG = "```python\ndef is_even(n):\n    return n % 2 == 1\n```"
WRONG_2 = "```python\ndef is_even(x):\n    return x % 2 == 1\n```"
HANGS = "```python\ndef is_even(n):\n    while True:\n        pass\n```"
EXITS = "```python\nimport sys\ndef is_even(n):\n    sys.exit(0)\n```"

PROMPT = '''Write is_even.
    >>> is_even(4)
    True
    >>> is_even(3)
    False
'''


def test_doctest_assert_and_arrow_forms_are_found():
    text = PROMPT + (
        "assert is_even(10) == True\n"
        "assert is_even(8)\n"
        "is_even(7) -> False\n"
        "will_it_fly([1, 2], 5) ➞ False\n"
        "- `add(2, 3)` → 5\n"
        "sum_pairs([1, 2]) returns [3]\n"
        "f(2) should be 'x'\n"
    )
    found = [(e.call, e.expected, e.form) for e in find_examples(text)]
    assert found == [
        ("is_even(4)", "True", "doctest"),
        ("is_even(3)", "False", "doctest"),
        ("is_even(10)", "True", "assert"),
        ("is_even(8)", None, "assert"),
        ("is_even(7)", "False", "arrow"),
        ("will_it_fly([1, 2], 5)", "False", "arrow"),
        ("add(2, 3)", "5", "arrow"),
        ("sum_pairs([1, 2])", "[3]", "arrow"),
        ("f(2)", "'x'", "arrow"),
    ]


def test_arrow_pairs_inside_prose_are_found():
    found = find_examples("Fix is_even so that is_even(4) returns True and is_even(3) → False. "
                          "Also f(1) -> 2, f(2) -> (4, 5); g([1, 2]) => [2, 1].")
    assert [(e.call, e.expected) for e in found] == [
        ("is_even(4)", "True"), ("is_even(3)", "False"), ("f(1)", "2"), ("f(2)", "(4, 5)"), ("g([1, 2])", "[2, 1]")]
    # a call with no arrow after it, or an arrow with no literal after it, is no example
    assert find_examples("call is_even(4) first; then is_even(3) returns whatever it likes") == []


def test_examples_are_capped_after_keeping_the_relevant_ones():
    noise = "\n".join(f"other({i}) → {i}" for i in range(40))
    codes = ["def is_even(n):\n    return n % 2 == 0\n"]
    found = examples_for(codes, noise + "\nis_even(4) → True")
    assert [(e.call, e.expected) for e in found] == [("is_even(4)", "True")]


def test_what_is_not_an_example_is_ignored():
    text = (
        ">>> x = 5\n5\n"                      # a statement, not a call
        ">>> obj.method(1)\n2\n"              # not a plain name
        "assert x > 3\n"                       # no call
        "f(2) -> something vague\n"           # expected is not a literal
        "The answer f(x) is big\n"            # prose
        ">>> g(1)\nTraceback (most recent call last):\n"
    )
    assert find_examples(text) == []


def test_doctest_without_a_literal_compares_the_repr_and_duplicates_collapse():
    ex = find_examples(">>> make()\nPoint(x=1)\n>>> make()\nPoint(x=1)\nassert sq(3) == 9\nsq(3) -> 9\n")
    assert [(e.call, e.expected, e.expected_repr) for e in ex] == [
        ("make()", None, "Point(x=1)"), ("sq(3)", "9", None)]


def test_request_text_reads_user_and_system_messages_and_text_parts():
    msgs = [{"role": "system", "content": "sys"}, {"role": "assistant", "content": "skip me"},
            {"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "image_url"}]}]
    assert request_text(msgs) == "sys\npart"
    assert request_text("not a list") == ""


def test_answer_code_takes_a_python_write_call_but_not_other_files():
    write = {"type": "function", "function": {"name": "write", "arguments": json.dumps(
        {"filePath": "src/even.py", "content": "def is_even(n):\n    return n % 2 == 0\n"})}}
    md = {"type": "function", "function": {"name": "write", "arguments": json.dumps(
        {"filePath": "README.md", "content": "def is_even(n): ..."})}}
    assert "return n % 2 == 0" in answer_code("", [write])
    assert answer_code("no code", [md]) == ""
    assert "n % 2 == 0" in answer_code(GOOD)


def test_program_prints_one_bit_per_example_after_the_sentinel():
    ex = find_examples(PROMPT)
    src = program("def is_even(n):\n    return True\n", ex, "S:")
    ns: dict = {}
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(src, "p", "exec"), ns)  # trusted code: our own program around a toy
    assert parse_results(buf.getvalue(), "S:", 2) == [True, False]
    assert parse_results("S:1", "S:", 2) is None  # wrong count: not trusted


def test_sandbox_counts_passes_and_hangs_or_early_exits_pass_nothing():
    codes = [answer_code(t) for t in (GOOD, WRONG, HANGS, EXITS, GOOD_2)]
    ex = relevant_examples(codes, find_examples(PROMPT + "assert is_even(0)\n"))
    assert len(ex) == 3
    assert run_examples(codes, ex) == [3, 0, 0, 0, 3]


def test_examples_for_functions_no_answer_defines_are_dropped():
    ex = find_examples(PROMPT + "add(2, 3) -> 5\n")
    assert [e.call for e in relevant_examples([answer_code(GOOD)], ex)] == ["is_even(4)", "is_even(3)"]


def _cands(*texts: str) -> list[Candidate]:
    return [Candidate(f"inst-{i}", t, latency_s=0.1 * (i + 1)) for i, t in enumerate(texts)]


def test_exec_vote_puts_examples_first_and_agreement_second():
    cands = _cands(WRONG, WRONG_2, GOOD, GOOD_2)
    plain = vote(cands)  # the two wrong answers are textually closest... the vote may pick them
    result = vote(cands, strategy="exec", passes=[1, 1, 2, 2], examples=2)
    assert result.winner in (2, 3) and set(result.cluster) <= {2, 3}
    meta = result.metadata(cands)
    assert meta["strategy"] == "exec"
    assert meta["exec"] == {"examples": 2, "winner": "2/2 examples",
                            "passed": {"inst-0": 1, "inst-1": 1, "inst-2": 2, "inst-3": 2}}
    assert plain.checks is None and "exec" not in plain.metadata(cands)


def test_exec_vote_needs_counts():
    with pytest.raises(ValueError, match="exec"):
        vote(_cands(GOOD, WRONG), strategy="exec")


def test_checked_vote_runs_answers_when_the_request_has_examples():
    cands = _cands(WRONG, WRONG_2, GOOD)
    r = asyncio.run(checked_vote(cands, PROMPT, strategy="similarity", threshold=0.8, mode="on"))
    assert r.strategy == "exec" and r.winner == 2 and r.exec_summary() == "2/2 examples"
    assert r.checks == [0, 0, 2]


def test_checked_vote_executes_nothing_without_examples_or_when_off():
    cands = _cands(WRONG, GOOD)
    r = asyncio.run(checked_vote(cands, "make it even", strategy="exec", threshold=0.8, mode="on"))
    assert r.strategy == "similarity" and r.checks is None
    assert any("no runnable examples" in n for n in r.notes)
    r = asyncio.run(checked_vote(cands, PROMPT, strategy="exec", threshold=0.8, mode="off"))
    assert r.checks is None and any("exec_check" in n for n in r.notes)
    r = asyncio.run(checked_vote(cands, PROMPT, strategy="quality", threshold=0.8, mode="on"))
    assert r.strategy == "quality" and r.checks is None
