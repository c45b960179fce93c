"""Runnable examples in a conversation, and the Python an answer would run them against.

The ``exec`` vote (see :mod:`localswarm.consensus.vote`) runs every candidate on the
examples the user wrote, so this module finds them. Three forms are recognised, and only
where the call and the expected value both parse (a call to a plain name, and a Python
literal or a repr to compare against):

* doctest lines: ``>>> add(2, 3)`` followed by the expected output ``5``;
* ``assert`` lines: ``assert add(2, 3) == 5`` (and ``assert is_even(4)``: truthy);
* "input → output" pairs: ``add(2, 3) → 5``, ``➞``, ``->``, ``=>``, ``==>``, ``==``,
  ``returns``, ``should return``, ``should be``, ``gives``, ``is``.

Pure: no I/O. :func:`program` builds the script the sandbox runs for one answer: the
answer's definitions (top-level statements that would run on import, such as example
calls, prints and ``if __name__ == "__main__"``, are dropped), then each example under
its own alarm (the first that hangs fails the rest), then one result line behind a
random sentinel.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .extract import extract, parse_python
from .normalize import _is_main_guard

__all__ = ["MAX_EXAMPLES", "Example", "answer_code", "body_text", "defined_names", "find_examples",
           "parse_results", "program", "request_text", "sanitize"]

#: At most this many examples are run per request (the first ones found).
MAX_EXAMPLES = 16

_ARROW = re.compile(
    r"^\s*(?:[-*•>]\s*)?(?:e\.g\.|example:?|for example:?|input:?)?\s*`?"
    r"(?P<call>[A-Za-z_][\w.]*\s*\(.*\))`?\s*"
    r"(?:→|➞|⟶|==>|=>|->|==|returns|should return|should be|gives|is|outputs|output:)\s*"
    r"`?(?P<expected>.+?)`?\s*[.;,]?\s*$",
    re.IGNORECASE,
)
_ASSERT = re.compile(r"^\s*assert\s+(?P<expr>.+?)\s*(?:#.*)?$")


@dataclass(frozen=True)
class Example:
    """One example: ``call`` evaluated must equal ``expected`` (literal or repr).

    ``expected`` is Python source of a literal, or None for a truthiness check (a bare
    ``assert call``). ``expected_repr`` is set instead when the expected output is not a
    literal (doctest semantics: compare the repr).
    """

    call: str
    expected: str | None
    form: str  # "doctest" | "assert" | "arrow"
    expected_repr: str | None = None

    @property
    def function(self) -> str:
        """The name called at the top of ``call``."""
        node = ast.parse(self.call, mode="eval").body
        assert isinstance(node, ast.Call)
        return _dotted(node.func) or ""


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    return None


def _call_source(src: str) -> str | None:
    """``src`` normalised when it is one call to a plain name, else None."""
    try:
        node = ast.parse(src.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return None
    if not isinstance(node, ast.Call) or _dotted(node.func) is None:
        return None
    return ast.unparse(node)


def _literal_source(src: str) -> str | None:
    try:
        node = ast.parse(src.strip(), mode="eval")
        ast.literal_eval(node)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None
    return ast.unparse(node.body)


def _doctests(lines: Sequence[str]) -> Iterable[Example]:
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line.startswith(">>>"):
            i += 1
            continue
        src = line[3:].strip()
        i += 1
        while i < len(lines) and lines[i].strip().startswith("..."):
            src += "\n" + lines[i].strip()[3:].strip()
            i += 1
        if i >= len(lines):
            break
        want = lines[i].strip()
        if not want or want.startswith(">>>"):
            continue
        call = _call_source(src)
        if call is None:
            continue
        literal = _literal_source(want)
        if literal is not None:
            yield Example(call, literal, "doctest")
        elif not want.startswith("Traceback"):
            yield Example(call, None, "doctest", expected_repr=want)


def _asserts(lines: Sequence[str]) -> Iterable[Example]:
    for line in lines:
        m = _ASSERT.match(line)
        if not m:
            continue
        try:
            node = ast.parse(m.group("expr"), mode="eval").body
        except SyntaxError:
            continue
        if (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)):
            call = _call_source(ast.unparse(node.left))
            literal = _literal_source(ast.unparse(node.comparators[0]))
            if call is not None and literal is not None:
                yield Example(call, literal, "assert")
        elif (call := _call_source(ast.unparse(node))) is not None:
            yield Example(call, None, "assert")


_INLINE_CALL = re.compile(r"(?<![\w.])[A-Za-z_]\w*\(")
_INLINE_ARROW = re.compile(r"`?\s*(?:→|➞|⟶|==>|=>|->|==|returns|should return|should be|gives|outputs)\s*`?\s*",
                           re.IGNORECASE)
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def _inline_arrows(line: str) -> Iterable[Example]:
    """Pairs inside prose: "... so that ``f(4) → True`` and f(3) returns False."

    Each call to a plain name followed by an arrow word is an example when some prefix
    of what follows (the longest, cut at a space, comma or semicolon, trailing
    punctuation dropped) parses as a literal.
    """
    for m in _INLINE_CALL.finditer(line):
        depth, end = 0, None
        for j in range(m.end() - 1, min(len(line), m.end() + 400)):
            c = line[j]
            if c in "([{":
                depth += 1
            elif c in _CLOSERS:
                depth -= 1
                if depth == 0:
                    end = j + 1
                    break
        if end is None:
            continue
        call = _call_source(line[m.start():end])
        arrow = _INLINE_ARROW.match(line, end + len(line[end:]) - len(line[end:].lstrip()))
        if call is None or arrow is None:
            continue
        rest = line[arrow.end():][:200]
        cuts = [len(rest)] + [k for k in range(len(rest) - 1, 0, -1) if rest[k] in " \t,;`"]
        for k in cuts:
            literal = _literal_source(rest[:k].rstrip().rstrip(".,;:`"))
            if literal is not None:
                yield Example(call, literal, "arrow")
                break


def _arrows(lines: Sequence[str]) -> Iterable[Example]:
    for line in lines:
        if line.lstrip().startswith((">>>", "assert")):
            continue
        m = _ARROW.match(line)
        call = _call_source(m.group("call")) if m else None
        literal = _literal_source(m.group("expected")) if m else None
        if call is not None and literal is not None:
            yield Example(call, literal, "arrow")
        else:
            yield from _inline_arrows(line)


def request_text(messages: Any) -> str:
    """The text the user wrote: every user (and system) message, text parts joined."""
    out: list[str] = []
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, Mapping) or m.get("role") not in ("user", "system"):
            continue
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p.get("text", "") for p in content
                    if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
    return "\n".join(out)


def body_text(body: Mapping[str, Any]) -> str:
    """Where a request body's runnable examples are: its messages, or a completion's prompt."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    return request_text(body.get("messages"))


def find_examples(text: str, *, limit: int = MAX_EXAMPLES) -> list[Example]:
    """Every runnable example in ``text``, first found first, without duplicates."""
    lines = text.splitlines()
    seen: set[tuple[str, str | None, str | None]] = set()
    found: list[Example] = []
    for ex in [*_doctests(lines), *_asserts(lines), *_arrows(lines)]:
        key = (ex.call, ex.expected, ex.expected_repr)
        if key in seen:
            continue
        seen.add(key)
        found.append(ex)
        if len(found) >= limit:
            break
    return found


_KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
         ast.Assign, ast.AnnAssign)


def sanitize(code: str) -> str:
    """Keep imports, definitions and plain assignments at top level.

    Assignments whose value calls ``input``/``print`` are dropped too. Code that does not
    parse is returned unchanged (it will fail to run, as it should).
    """
    tree = parse_python(code)
    if tree is None:
        return code
    kept = []
    for node in tree.body:
        if not isinstance(node, _KEEP) or _is_main_guard(node):
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
            isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in ("input", "print")
            for sub in ast.walk(node)
        ):
            continue
        kept.append(node)
    lines = code.split("\n")
    out = []
    for node in kept:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        out.append("\n".join(lines[start - 1 : node.end_lineno]))
    return "\n\n".join(out) + "\n"


def _write_call_content(call: Mapping[str, Any]) -> str | None:
    """The file content of an opencode-style ``write`` call to a ``.py`` file."""
    fn = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping) or fn.get("name") != "write":
        return None
    try:
        args = json.loads(fn.get("arguments") or "{}")
    except (TypeError, ValueError):
        return None
    if not isinstance(args, Mapping):
        return None
    path = args.get("filePath") or args.get("file_path") or args.get("path") or ""
    content = args.get("content")
    if isinstance(path, str) and path.endswith(".py") and isinstance(content, str):
        return content
    return None


def answer_code(text: str | None, tool_calls: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The Python an answer carries: its Python blocks, or the content of a ``write`` of a
    ``.py`` file among its tool calls. Empty when it carries none."""
    for call in tool_calls or ():
        content = _write_call_content(call)
        if content is not None:
            return content
    return extract(text or "").python


def defined_names(code: str) -> set[str]:
    """Top-level function and class names ``code`` defines (empty if it does not parse)."""
    tree = parse_python(code)
    if tree is None:
        return set()
    return {n.name for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


_RUNNER = '''
import signal as __lsw_signal
class __LswTimeout(BaseException):
    pass
def __lsw_alarm(*_):
    raise __LswTimeout()
__lsw_signal.signal(__lsw_signal.SIGALRM, __lsw_alarm)
__lsw_results = []
__lsw_cases = {cases!r}
for __lsw_call, __lsw_expected, __lsw_repr in __lsw_cases:
    __lsw_ok = False
    try:
        __lsw_signal.setitimer(__lsw_signal.ITIMER_REAL, {per_example_s!r})
        try:
            __lsw_value = eval(__lsw_call)
            if __lsw_expected is not None:
                __lsw_ok = bool(__lsw_value == eval(__lsw_expected))
            elif __lsw_repr is not None:
                __lsw_ok = repr(__lsw_value) == __lsw_repr
            else:
                __lsw_ok = bool(__lsw_value)
        finally:
            __lsw_signal.setitimer(__lsw_signal.ITIMER_REAL, 0)
    except __LswTimeout:  # one hang: the rest would hang too, and time is short
        __lsw_results += [False] * (len(__lsw_cases) - len(__lsw_results))
        break
    except BaseException:
        __lsw_ok = False
    __lsw_results.append(__lsw_ok)
print({sentinel!r} + "".join("1" if r else "0" for r in __lsw_results), flush=True)
'''


def program(code: str, examples: Sequence[Example], sentinel: str, *, per_example_s: float = 0.5) -> str:
    """The script that runs ``examples`` against ``code`` and prints ``sentinel`` + one
    ``0``/``1`` per example (in order). Definitions failing to load print nothing."""
    cases = [(e.call, e.expected, e.expected_repr) for e in examples]
    return sanitize(code) + _RUNNER.format(cases=cases, sentinel=sentinel, per_example_s=per_example_s)


def parse_results(stdout: str, sentinel: str, count: int) -> list[bool] | None:
    """The per-example results printed by :func:`program`, or None if it never got there."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(sentinel):
            bits = line[len(sentinel):].strip()
            if len(bits) == count and set(bits) <= {"0", "1"}:
                return [b == "1" for b in bits]
    return None
