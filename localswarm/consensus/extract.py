"""Split an assistant reply into what is voted on: fenced code blocks and prose.

A reply is usually markdown: some prose, one or more fenced code blocks
(```` ```python ... ``` ````), maybe a ``<think>`` section from a reasoning model.
When a reply has no fence at all but parses as Python and looks like code, the
whole text is treated as one Python block (small models often answer with bare code).
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass, field

__all__ = [
    "PYTHON_LANGS",
    "CodeBlock",
    "Extracted",
    "extract",
    "parse_python",
    "strip_think",
]

#: Fence info strings that mean "this block is Python".
PYTHON_LANGS = frozenset({"python", "py", "python3", "py3", "ipython", "python2", "sage"})
#: Fence info strings that mean "an interactive session": examples, not a solution.
_SESSION_LANGS = frozenset({"pycon", "console", "doctest", "python-repl", "repl"})

_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^\n]*$")
_THINK_RE = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block. ``lang`` is the lower-cased first word of the info string."""

    lang: str
    code: str
    closed: bool = True  # False when the reply ended inside the fence (cut off)

    @property
    def is_python(self) -> bool:
        """True when the fence says Python (an untagged block is decided by ``extract``)."""
        return self.lang in PYTHON_LANGS


@dataclass(frozen=True)
class Extracted:
    """The parts of one reply.

    ``blocks`` are all fenced blocks in order; ``prose`` is the text outside them.
    ``python`` is the Python source that is voted on (Python blocks joined, interactive
    sessions left out), ``other_code`` the joined non-Python code of the dominant language.
    ``parses`` is None when there is no Python code, else whether all of it parses.
    """

    blocks: tuple[CodeBlock, ...]
    prose: str
    python: str = ""
    other_code: str = ""
    other_lang: str = ""
    parses: bool | None = None
    bare_code: bool = False  # the whole reply was unfenced Python
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: The parsed Python blocks when ``parses`` (reused by normalisation, which edits them).
    trees: tuple[ast.Module, ...] = field(default=(), compare=False, repr=False)


def strip_think(text: str) -> str:
    """Remove ``<think>...</think>`` sections (an unterminated one runs to the end)."""
    if "<think" not in text.lower():
        return text
    return _THINK_RE.sub("", text)


def parse_python(source: str) -> ast.Module | None:
    """``ast.parse`` that returns None instead of raising (syntax, nesting, null bytes)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning on odd escapes in model code
            return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def _split_fences(text: str) -> tuple[list[CodeBlock], str]:
    """Scan line by line for fences; return the blocks and the prose outside them."""
    blocks: list[CodeBlock] = []
    prose: list[str] = []
    lines = text.split("\n")
    i = 0
    n = len(lines)
    while i < n:
        m = _FENCE_RE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        lang = lang.lstrip("{.").rstrip("}")
        body: list[str] = []
        i += 1
        closed = False
        while i < n:
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) <= {fence[0]}:
                closed = True
                i += 1
                break
            body.append(lines[i])
            i += 1
        blocks.append(CodeBlock(lang=lang, code="\n".join(body), closed=closed))
    return blocks, "\n".join(prose)


def _looks_like_code(tree: ast.Module) -> bool:
    """A parse of prose-like text ("Yes", "42") is not code: want a real statement or a call."""
    for node in tree.body:
        if not isinstance(node, ast.Expr):
            return True
        if any(isinstance(sub, (ast.Call, ast.Lambda, ast.ListComp)) for sub in ast.walk(node)):
            return True
    return False


def _is_session(block: CodeBlock) -> bool:
    if block.lang in _SESSION_LANGS:
        return True
    first = block.code.lstrip().split("\n", 1)[0]
    return first.startswith(">>>") or first.startswith("$ ")


def _dedent(code: str) -> str:
    import textwrap

    return textwrap.dedent(code)


def extract(text: str) -> Extracted:
    """Extract code and prose from one assistant reply (pure; never raises).

    Python is recognised by the fence language, or for an untagged fence by parsing;
    an untagged block that does not parse counts as code of unknown language, never
    as broken Python. Interactive sessions (``>>>``, ``$ ``, ``pycon``) are examples
    and are left out of the voted code.
    """
    text = strip_think(text or "")
    blocks, prose = _split_fences(text)
    notes: list[str] = []
    if not blocks:
        stripped = text.strip()
        if stripped:
            tree = parse_python(stripped)
            if tree is not None and tree.body and _looks_like_code(tree):
                return Extracted(
                    blocks=(CodeBlock("python", stripped),),
                    prose="",
                    python=stripped,
                    parses=True,
                    bare_code=True,
                    trees=(tree,),
                )
        return Extracted(blocks=(), prose=text)

    py_parts: list[str] = []
    trees: list[ast.Module] = []
    py_ok = True
    other: dict[str, list[str]] = {}
    for block in blocks:
        code = _dedent(block.code)
        if not code.strip() or _is_session(block):
            continue
        if block.is_python:
            py_parts.append(code)
            if not block.closed:
                notes.append("unterminated python fence")
            tree = parse_python(code)
            if tree is None:
                py_ok = False
            else:
                trees.append(tree)
        elif block.lang == "" and (tree := parse_python(code)) is not None:
            py_parts.append(code)
            trees.append(tree)
        else:
            other.setdefault(block.lang, []).append(code)
    other_lang = ""
    other_code = ""
    if other:
        other_lang = max(other, key=lambda k: sum(len(c) for c in other[k]))
        other_code = "\n".join(other[other_lang])
    python = "\n\n".join(py_parts)
    return Extracted(
        blocks=tuple(blocks),
        prose=prose,
        python=python,
        other_code=other_code,
        other_lang=other_lang,
        parses=(py_ok if py_parts else None),
        notes=tuple(notes),
        trees=tuple(trees) if py_ok else (),
    )
