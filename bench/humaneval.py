"""HumanEval consensus benchmark: a thin wrapper over ``python -m localswarm.eval humaneval``.

    python bench/humaneval.py --spawn --n 5 --limit 40 --max-tokens 320

Writes docs/consensus.md (see localswarm/eval/humaneval.py for every option).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localswarm.eval.humaneval import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
