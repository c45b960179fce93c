"""``python -m localswarm.eval humaneval ...`` (see ``localswarm/eval/humaneval.py``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m localswarm.eval humaneval [options]   (humaneval --help for options)")
        return 0 if argv else 2
    if argv[0] != "humaneval":
        print(f"unknown benchmark {argv[0]!r}; available: humaneval", file=sys.stderr)
        return 2
    from localswarm.eval.humaneval import main as humaneval_main

    return humaneval_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
