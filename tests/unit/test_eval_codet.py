"""The CodeT experiment's pure parts: which generated tests count, and dual agreement."""

from __future__ import annotations

from localswarm.eval.codet import dual_scores, generated_tests


def test_generated_tests_keep_calls_of_the_function_with_a_literal() -> None:
    replies = [
        "```python\nassert add(1, 2) == 3\nassert add(0, 0) == 0\nassert add(1, 2)\n```",
        "Sure:\n```python\nassert add(1, 2) == 3\nassert sub(3, 1) == 2\nassert add(2, 2) == x\n```",
        "assert add(5, 5) == 10",  # no fence: the text is read
        "",
    ]
    tests = generated_tests(replies, "add")
    assert [(t.call, t.expected) for t in tests] == [("add(1, 2)", "3"), ("add(0, 0)", "0"), ("add(5, 5)", "10")]
    assert len(generated_tests(replies * 20, "add", limit=2)) == 2


def test_dual_scores_weight_each_passed_test_by_its_support() -> None:
    # test 0: passed by candidates 0, 1, 2; test 1: by 0 only; test 2: by nobody
    results = [[True, True, False], [True, False, False], [True, False, False], [False, False, False], None]
    assert dual_scores(results) == [3 + 1, 3, 3, 0, 0]
    assert dual_scores([None, None]) == [0, 0]
    assert dual_scores([]) == []
