"""Per-answer features and the pairwise similarity used for voting.

Similarity of two answers of the same kind is the mean of rapidfuzz's normalised Indel
similarity over raw tokens and over normalised tokens (see ``normalize``). Answers of
different kinds (code against prose, Python against Rust) are compared on the tokens
of their whole text.

Features are computed once per distinct text and cached (``analyse``), so repeated
calls while answers stream in (early quorum) only pay for the new answers.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from rapidfuzz.distance import Indel

from .extract import extract, strip_think
from .normalize import normalize_code, normalize_prose, normalize_python, tokenize

__all__ = ["Features", "analyse", "pair_similarity", "similarity_matrix", "text_similarity"]

#: Distinct texts kept analysed (~250 kB each for a 2k-token answer): enough for the
#: answers of a dozen concurrent 8-way requests.
_CACHE_SIZE = 128


@dataclass(frozen=True, eq=False)
class Features:
    """What the vote knows about one reply's text.

    ``kind`` is ``"python"``, ``"code"`` (another language), ``"prose"`` or ``"empty"``.
    ``key`` is the exact-bucket key (kind + normal form): equal keys mean the answers are
    the same after normalisation. ``parses`` is None when there is no Python code.
    Compared and hashed by identity: ``analyse`` returns one object per distinct text.
    """

    kind: str
    raw: tuple[str, ...]
    norm: tuple[str, ...]
    key: str
    parses: bool | None
    length: int
    text: str
    lang: str = ""

    @property
    def full(self) -> tuple[str, ...]:
        """Tokens of the whole reply (used when kinds differ)."""
        return _full_tokens(self.text)


@lru_cache(maxsize=_CACHE_SIZE)
def _full_tokens(text: str) -> tuple[str, ...]:
    return tuple(tokenize(strip_think(text).lower()))


@lru_cache(maxsize=_CACHE_SIZE)
def analyse(text: str) -> Features:
    """Extract, normalise and tokenise one reply (pure; cached per distinct text)."""
    ex = extract(text)
    if ex.python.strip():
        code = ex.python
        raw = tuple(tokenize(code))
        normal = None
        if ex.parses and ex.trees:
            tree = ast.Module(body=[s for t in ex.trees for s in t.body], type_ignores=[])
            normal = normalize_python(code, tree)
        if normal is not None:
            norm = tuple(tokenize(normal))
            key = "python:" + normal
        else:
            norm = tuple(normalize_code(code, "python"))
            key = "python?:" + " ".join(norm)
        return Features("python", raw, norm, key, ex.parses, len(code), text, "python")
    if ex.other_code.strip():
        code = ex.other_code
        raw = tuple(tokenize(code))
        norm = tuple(normalize_code(code, ex.other_lang))
        key = f"code:{ex.other_lang}:" + " ".join(norm)
        return Features("code", raw, norm, key, None, len(code), text, ex.other_lang)
    prose = ex.prose.strip()
    if prose:
        raw = tuple(tokenize(prose))
        norm = tuple(normalize_prose(prose))
        return Features("prose", raw, norm, "prose:" + " ".join(norm), None, len(prose), text)
    return Features("empty", (), (), "empty:", None, 0, text)


def pair_similarity(a: Features, b: Features) -> float:
    """Similarity of two answers in [0, 1] (symmetric; cached per pair of features)."""
    if id(a) > id(b):
        a, b = b, a
    return _pair_similarity(a, b)


@lru_cache(maxsize=_CACHE_SIZE * 4)
def _pair_similarity(a: Features, b: Features) -> float:
    if a.key == b.key:
        raw = Indel.normalized_similarity(a.raw, b.raw)
        return (raw + 1.0) / 2.0
    if a.kind == b.kind and a.lang == b.lang:
        if a.kind == "empty":
            return 1.0
        raw = Indel.normalized_similarity(a.raw, b.raw)
        norm = Indel.normalized_similarity(a.norm, b.norm)
        return (raw + norm) / 2.0
    if a.kind == "empty" or b.kind == "empty":
        return 0.0
    return float(Indel.normalized_similarity(a.full, b.full))


def similarity_matrix(features: list[Features]) -> np.ndarray:
    """Symmetric n x n matrix of ``pair_similarity`` with ones on the diagonal."""
    n = len(features)
    sim = np.ones((n, n), dtype=np.float64)
    for i in range(n):
        fi = features[i]
        for j in range(i + 1, n):
            s = pair_similarity(fi, features[j])
            sim[i, j] = sim[j, i] = s
    return sim


def text_similarity(a: str, b: str) -> float:
    """Similarity of two reply texts (convenience wrapper over ``analyse``)."""
    return pair_similarity(analyse(a), analyse(b))
