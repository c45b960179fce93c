"""Turning model replies into runnable HumanEval programs."""

from __future__ import annotations

import pytest

from localswarm.eval.codegen import assemble_program, load_problems, messages_for, sanitize

PROBLEM = {
    "task_id": "Demo/0",
    "prompt": 'from typing import List\n\n\ndef add_all(xs: List[int]) -> int:\n    """Sum of xs.\n'
              '    >>> add_all([1, 2])\n    3\n    """\n',
    "entry_point": "add_all",
    "test": "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n",
}


def _run(program: str) -> int:
    ns: dict = {}
    exec(program + "\n" + PROBLEM["test"], ns)  # trusted test inputs only
    ns["check"](ns[PROBLEM["entry_point"]])
    return 0


def test_whole_function_in_fence_with_prose_and_examples() -> None:
    reply = (
        "Here is the function:\n\n```python\ndef add_all(xs: List[int]) -> int:\n    total = 0\n"
        "    for x in xs:\n        total += x\n    return total\n\nprint(add_all([1, 2]))\n"
        "if __name__ == '__main__':\n    import doctest\n    doctest.testmod()\n```\n"
        "It loops over the list."
    )
    program, how = assemble_program(PROBLEM, reply)
    assert how == "function"
    assert "print(add_all" not in program and "__main__" not in program
    assert "from typing import List" in program  # the prompt's imports come along
    assert _run(program) == 0


def test_body_only_is_indented_under_the_prompt() -> None:
    program, how = assemble_program(PROBLEM, "```python\nreturn sum(xs)\n```")
    assert how == "body"
    assert program.endswith("    return sum(xs)\n")
    assert _run(program) == 0


def test_already_indented_body_keeps_relative_indentation() -> None:
    reply = "    total = 0\n    for x in xs:\n        total += x\n    return total\n"
    program, how = assemble_program(PROBLEM, reply)
    assert how == "body"
    assert _run(program) == 0


def test_bare_unfenced_function() -> None:
    program, how = assemble_program(PROBLEM, "def add_all(xs):\n    return sum(xs)\n")
    assert how == "function" and _run(program) == 0


def test_helper_functions_and_imports_in_reply_are_kept() -> None:
    reply = ("```python\nimport math\n\ndef _helper(xs):\n    return math.fsum(xs)\n\n"
             "def add_all(xs):\n    return int(_helper(xs))\n```")
    program, _ = assemble_program(PROBLEM, reply)
    assert _run(program) == 0


def test_empty_reply_gives_a_program_that_fails_the_test() -> None:
    program, how = assemble_program(PROBLEM, "I cannot help with that.")
    assert how in ("empty", "body")
    with pytest.raises(Exception):
        _run(program)
    program, how = assemble_program(PROBLEM, "")
    assert how == "empty"


def test_unparsable_code_is_kept_as_is_and_fails() -> None:
    program, how = assemble_program(PROBLEM, "```python\ndef add_all(xs):\n    return sum(xs\n```")
    assert how == "function"
    with pytest.raises(SyntaxError):
        compile(program, "p", "exec")


def test_sanitize_drops_examples_and_input() -> None:
    code = "import os\nX = 3\nY = input()\ndef f():\n    return X\nassert f() == 3\nf()\nfor i in range(3):\n    pass\n"
    out = sanitize(code)
    assert "import os" in out and "X = 3" in out and "def f" in out
    assert "input" not in out and "assert" not in out and "for i" not in out


def test_decorators_are_kept() -> None:
    out = sanitize("import functools\n@functools.lru_cache(None)\ndef f(n):\n    return n\n")
    assert "@functools.lru_cache(None)" in out


def test_humaneval_data_loads_offline() -> None:
    problems = load_problems(3)
    assert [p["task_id"] for p in problems] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    for p in problems:
        assert {"prompt", "test", "entry_point", "canonical_solution"} <= set(p)
    msgs = messages_for(problems[0])
    assert msgs[-1]["role"] == "user" and problems[0]["prompt"] in msgs[-1]["content"]


def test_canonical_solutions_assemble_as_bodies() -> None:
    """The dataset's own solutions (bodies) must pass through the same assembly."""
    for p in load_problems(5):
        program, how = assemble_program(p, p["canonical_solution"])
        assert how == "body"
        ns: dict = {}
        exec(program + "\n" + p["test"], ns)  # the dataset's reference code, not model output
        ns["check"](ns[p["entry_point"]])


def test_raw_completion_continues_the_prompt() -> None:
    program, how = assemble_program(PROBLEM, "    return sum(xs)\n", completion=True)
    assert how == "completion" and _run(program) == 0
    assert assemble_program(PROBLEM, "", completion=True)[1] == "empty"
