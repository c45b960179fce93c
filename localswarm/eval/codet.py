"""The CodeT experiment: score answers on tests the models write themselves.

CodeT (Chen et al. 2022, "CodeT: Code Generation with Generated Tests") asks the model
for test cases as well as solutions and prefers the solutions that pass the tests most
other solutions pass too ("dual execution agreement"). Here, as issue 16 asks: a second
generation round asks each instance for a few ``assert`` lines (``--tests-seed``, see
:func:`localswarm.eval.codegen.tests_messages_for`); every candidate runs on the tests
that call the problem's function, in the sandbox; a candidate's score is the sum, over
the tests it passes, of how many candidates pass that test. The highest score wins;
among the tied, the ``similarity`` vote decides (the same tie-break as ``exec``).

Everything here is offline: it scores saved samples against saved tests. Nothing in the
gateway uses it (see docs/consensus.md for why).
"""

from __future__ import annotations

from collections.abc import Sequence

from localswarm.consensus.examples import Example, find_examples
from localswarm.consensus.extract import extract

__all__ = ["MAX_TESTS", "dual_scores", "generated_tests"]

#: At most this many generated tests per problem (the first ones found, over all replies).
MAX_TESTS = 25


def generated_tests(replies: Sequence[str], entry_point: str, *, limit: int = MAX_TESTS) -> list[Example]:
    """The runnable tests in the test-round replies that call ``entry_point`` (deduplicated).

    A reply's Python blocks are read (the whole text when it has none); only tests that
    compare the call with a literal count (a bare ``assert f(x)`` is too weak a test).
    """
    seen: set[tuple[str, str | None]] = set()
    out: list[Example] = []
    for reply in replies:
        code = extract(reply or "").python or (reply or "")
        for ex in find_examples(code, limit=limit):
            if ex.function != entry_point or ex.expected is None or (ex.call, ex.expected) in seen:
                continue
            seen.add((ex.call, ex.expected))
            out.append(ex)
            if len(out) >= limit:
                return out
    return out


def dual_scores(results: Sequence[Sequence[bool] | None]) -> list[int]:
    """Per candidate: the sum over the tests it passes of how many candidates pass that test.

    ``results[c][t]``: candidate ``c`` passed test ``t`` (None: the candidate has no code).
    A test every candidate fails adds nothing; a test only one candidate passes adds 1.
    """
    rows = [list(r) if r is not None else None for r in results]
    width = max((len(r) for r in rows if r is not None), default=0)
    support = [sum(1 for r in rows if r is not None and r[t]) for t in range(width)]
    return [0 if r is None else sum(support[t] for t in range(width) if r[t]) for r in rows]
