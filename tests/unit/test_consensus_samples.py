"""Realistic assistant replies shared by the consensus tests, and sanity checks on them.

The replies are what small coding models actually produce for HumanEval-style prompts:
markdown prose around a fenced Python block, different names, comments, docstrings,
type hints and example usage.
"""

from __future__ import annotations

from localswarm.consensus.similarity import analyse, text_similarity

# --- has_close_elements (HumanEval/0): three renamed copies of one algorithm ----------

CLOSE_A = '''Here is a straightforward solution that compares every pair of numbers:

```python
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """Check if in given list of numbers, are any two numbers closer to each other
    than given threshold."""
    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem - elem2)
                if distance < threshold:
                    return True

    return False
```

The function loops over all pairs `(i, j)` with `i != j` and returns `True` as soon as
two elements are closer than `threshold`. It runs in O(n²) time and O(1) extra space.
'''

CLOSE_B = '''To solve this, I'll check each pair of elements and compare their distance with
the threshold.

```python
from typing import List

def has_close_elements(numbers: List[float], threshold: float) -> bool:
    # compare all pairs of distinct positions
    for i, a in enumerate(numbers):
        for j, b in enumerate(numbers):
            if i != j:
                d = abs(a - b)   # absolute difference
                if d < threshold:
                    return True
    return False
```

### Explanation
1. Two nested loops visit every ordered pair of indices.
2. When the indices differ we compute the absolute difference.
3. If any difference is below the threshold we return `True`; otherwise `False`.
'''

CLOSE_C = '''```python
from typing import List


def has_close_elements(values: List[float], limit: float) -> bool:
    """Return True if two values are closer than limit."""
    for first_index, first in enumerate(values):
        for second_index, second in enumerate(values):
            if first_index != second_index:
                gap = abs(first - second)
                if gap < limit:
                    return True
    return False


if __name__ == "__main__":
    print(has_close_elements([1.0, 2.0, 3.0], 0.5))  # False
    print(has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3))  # True
```

This prints `False` and then `True` for the two examples from the docstring.
'''

# A different, equally valid algorithm: sort, then compare neighbours.
CLOSE_SORTED = '''A more efficient approach sorts the list first, so that the closest pair must be
adjacent:

```python
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """Sort and compare neighbours: O(n log n)."""
    ordered = sorted(numbers)
    return any(b - a < threshold for a, b in zip(ordered, ordered[1:]))
```

Sorting costs O(n log n) and the single pass over neighbours is linear.
'''

# Cut at the length limit in the middle of the code (finish_reason == "length").
CLOSE_TRUNCATED = '''Sure! Let me write a solution that checks every pair:

```python
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem -'''

# Finished, but the code has a syntax error (missing colon).
CLOSE_BROKEN = '''```python
def has_close_elements(numbers, threshold)
    for i in range(len(numbers)):
        for j in range(i + 1, len(numbers)):
            if abs(numbers[i] - numbers[j]) < threshold:
                return True
    return False
```
'''

# --- separate_paren_groups (HumanEval/1) ------------------------------------------------

PAREN_A = '''We can track the nesting depth while scanning the string:

```python
from typing import List


def separate_paren_groups(paren_string: str) -> List[str]:
    result = []
    current_string = []
    current_depth = 0

    for c in paren_string:
        if c == '(':
            current_depth += 1
            current_string.append(c)
        elif c == ')':
            current_depth -= 1
            current_string.append(c)

            if current_depth == 0:
                result.append(''.join(current_string))
                current_string.clear()

    return result
```

Spaces are ignored because only parentheses are appended to the current group.
'''

PAREN_B = '''```python
from typing import List

def separate_paren_groups(paren_string: str) -> List[str]:
    """Split balanced groups of parentheses, ignoring spaces."""
    groups: List[str] = []
    buf = []
    depth = 0
    for ch in paren_string:
        if ch == '(':
            depth += 1
            buf.append(ch)
        elif ch == ')':
            depth -= 1
            buf.append(ch)
            if depth == 0:
                groups.append(''.join(buf))
                buf.clear()
    return groups
```
The depth counter tells us when a top-level group is closed.
'''

# --- prose answers -------------------------------------------------------------------

PROSE_GIL_A = (
    "The Global Interpreter Lock (GIL) is a mutex in CPython that allows only one thread "
    "to execute Python bytecode at a time. It simplifies memory management, but it means "
    "CPU-bound threads cannot run in parallel; use multiprocessing for CPU-bound work."
)
PROSE_GIL_B = (
    "The Global Interpreter Lock (GIL) is a mutex in CPython that lets only one thread "
    "execute Python bytecode at a time. It makes memory management simpler, but CPU-bound "
    "threads cannot run in parallel, so use multiprocessing for CPU-bound work."
)
PROSE_OFF_TOPIC = (
    "To reverse a list in Python you can call list.reverse() to modify it in place, or use "
    "slicing with [::-1] to get a reversed copy without touching the original."
)


def test_renamed_copies_are_identical_after_normalisation() -> None:
    keys = {analyse(t).key for t in (CLOSE_A, CLOSE_B, CLOSE_C)}
    assert len(keys) == 1


def test_different_algorithm_is_below_threshold() -> None:
    assert text_similarity(CLOSE_A, CLOSE_SORTED) < 0.8
    assert text_similarity(CLOSE_A, CLOSE_B) > 0.8


def test_samples_parse_as_expected() -> None:
    assert analyse(CLOSE_A).parses is True
    assert analyse(CLOSE_TRUNCATED).parses is False
    assert analyse(CLOSE_BROKEN).parses is False
    assert analyse(PROSE_GIL_A).kind == "prose"
