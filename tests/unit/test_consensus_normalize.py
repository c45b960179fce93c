"""Extraction of code and prose, Python normalisation, tokenisation."""

from __future__ import annotations

from localswarm.consensus.extract import extract, strip_think
from localswarm.consensus.normalize import normalize_code, normalize_python, tokenize
from localswarm.consensus.similarity import analyse
from tests.unit.test_consensus_samples import CLOSE_A, CLOSE_C, CLOSE_TRUNCATED


def test_fenced_blocks_and_prose_are_separated() -> None:
    ex = extract(CLOSE_A)
    assert len(ex.blocks) == 1 and ex.blocks[0].lang == "python"
    assert "def has_close_elements" in ex.python
    assert "straightforward solution" in ex.prose
    assert "def has_close" not in ex.prose
    assert ex.parses is True


def test_unterminated_fence_runs_to_the_end() -> None:
    ex = extract(CLOSE_TRUNCATED)
    assert ex.blocks[-1].closed is False
    assert ex.parses is False
    assert "unterminated python fence" in ex.notes


def test_untagged_block_is_python_only_if_it_parses() -> None:
    ex = extract("Run:\n```\nx = [i * i for i in range(3)]\n```\n")
    assert ex.python.startswith("x = ") and ex.parses is True
    ex = extract("Run:\n```\nnpm install && npm test\n```\n")
    assert ex.python == "" and ex.parses is None and "npm install" in ex.other_code


def test_interactive_sessions_are_not_voted_code() -> None:
    text = "```python\ndef f(x):\n    return x + 1\n```\n\n```python\n>>> f(1)\n2\n```\n"
    ex = extract(text)
    assert ex.parses is True and ">>>" not in ex.python


def test_bare_code_and_prose_that_happens_to_parse() -> None:
    assert extract("def f(x):\n    return x * 2\n").bare_code is True
    assert extract("Yes").python == ""
    assert extract("42").python == ""
    assert extract("Paris is the capital of France.").python == ""


def test_think_sections_are_ignored() -> None:
    assert strip_think("<think>hmm, let me see</think>The answer is 4.") == "The answer is 4."
    assert strip_think("<think>never closed") == ""
    assert analyse("<think>x = 1</think>The answer is 4.").kind == "prose"


def test_normalize_python_renames_and_strips() -> None:
    a = '''
import math
from typing import List

def area(radius: float) -> float:
    """Area of a circle."""
    # pi r squared
    result: float = math.pi * radius ** 2
    return result

class Box:
    """A box."""
    size: int

    def grow(self, by: int = 1) -> None:
        self.size += by
'''
    b = '''
import math
from typing import List
def f(r):
    out = math.pi * r ** 2
    return out
class B:
    def grow(me, step=1):
        me.size += step
'''
    na, nb = normalize_python(a), normalize_python(b)
    assert na == nb
    assert "math.pi" in na  # imported names and attributes are kept
    assert "grow" in na and ".size" in na
    assert "Area of a circle" not in na and "float" not in na


def test_normalize_python_keeps_builtins_and_drops_examples() -> None:
    src = CLOSE_C.split("```python\n")[1].split("```")[0]
    out = normalize_python(src)
    assert out is not None
    assert "enumerate" in out and "abs" in out
    assert "__main__" not in out and "print" not in out
    assert normalize_python("def f(:\n  pass") is None


def test_normalize_python_keyword_arguments_follow_local_renames() -> None:
    a = normalize_python("def f(x, scale=1):\n    return x * scale\nf(2, scale=3)\ny = f(1, scale=2)")
    b = normalize_python("def g(v, k=1):\n    return v * k\ng(2, k=3)\nz = g(1, k=2)")
    assert a == b


def test_tokenize_code() -> None:
    assert tokenize("x += a**2 != b // 3.5e-2 -> y") == ["x", "+=", "a", "**", "2", "!=", "b", "//", "3.5e-2", "->", "y"]
    assert tokenize("naïve_name = 0x1F") == ["naïve_name", "=", "0x1F"]


def test_normalize_code_other_languages() -> None:
    js1 = "// add two numbers\nfunction add(a, b) { return a + b; }\nconsole.log(add(1, 2));"
    js2 = "function sum(x, y) {\n  /* sum */ return x + y;\n}\nconsole.log(sum(1, 2));"
    assert normalize_code(js1, "js") == normalize_code(js2, "javascript")
    assert "log" in normalize_code(js1, "js")  # attribute names kept
    sh = normalize_code("# list files\nls -la  # long", "bash")
    assert "list" not in sh and "long" not in sh
