"""Tokenise and normalise code and prose so that equivalent answers look alike.

Python goes through ``ast``: docstrings, type hints, comments and example-usage code
(``if __name__ == "__main__":``, top-level ``print``/``assert``) are dropped, and every
locally bound name (variables, arguments, functions and classes defined in the code)
is renamed ``v0, v1, ...`` in order of appearance. Builtins, imported names, method
names and attribute names are kept: they carry meaning that renaming would erase.

Other languages are normalised at token level: comments dropped, identifiers that are
not keywords and not attribute names renamed in order of appearance.
"""

from __future__ import annotations

import ast
import re
from collections import deque

from .extract import parse_python

__all__ = [
    "normalize_code",
    "normalize_prose",
    "normalize_python",
    "tokenize",
]

_TOKEN_RE = re.compile(
    r"""
    [^\W\d]\w*                               # identifier (unicode letters too)
    | 0[xXbBoO][0-9a-fA-F_]+                 # hex / bin / oct
    | \d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?    # number
    | \*\*=? | //=? | <<=? | >>=? | ->  | :=  | \.\.\.
    | == | != | <= | >= | && | \|\| | \+\+ | -- | =>  | ::
    | [-+*/%&|^@]=
    | \S                                     # any other single character
    """,
    re.VERBOSE,
)
_WORD_RE = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Split code or prose into identifier, number and operator tokens (no whitespace)."""
    return _TOKEN_RE.findall(text)


# ---------------------------------------------------------------------------- Python


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    if not (isinstance(test, ast.Compare) and len(test.comparators) == 1):
        return False
    names = [test.left, test.comparators[0]]
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in names) and any(
        isinstance(n, ast.Constant) and n.value == "__main__" for n in names
    )


def _is_example_stmt(node: ast.stmt) -> bool:
    """Top-level ``print(...)`` or ``assert``: example usage, not part of the solution."""
    if isinstance(node, ast.Assert):
        return True
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id == "print"
    )


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
_STMT_LISTS: dict[type, tuple[str, ...]] = {
    t: tuple(f for f in ("body", "orelse", "finalbody") if f in t._fields)
    for t in (
        ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try,
        ast.ExceptHandler, ast.match_case, *([ast.TryStar] if hasattr(ast, "TryStar") else []),
    )
}
_MATCH_NAMES = (ast.MatchAs, ast.MatchStar)


def _clean_stmts(stmts: list[ast.stmt], drop_docstring: bool) -> list[ast.stmt]:
    """Drop a leading docstring; turn ``x: T = v`` into ``x = v`` and drop bare ``x: T``."""
    out: list[ast.stmt] = []
    for i, stmt in enumerate(stmts):
        if i == 0 and drop_docstring and _is_docstring(stmt):
            continue
        if type(stmt) is ast.AnnAssign:
            if stmt.value is None:
                continue
            stmt = ast.Assign(targets=[stmt.target], value=stmt.value, lineno=stmt.lineno)
        out.append(stmt)
    return out or [ast.Pass()]


def _has_annassign(stmts: list[ast.stmt]) -> bool:
    return any(type(s) is ast.AnnAssign for s in stmts)


#: Fields never holding a name: contexts, operators, literals.
_NO_NAMES = frozenset({"ctx", "op", "ops", "type_comment", "kind", "value_str"})
_FIELDS: dict[type, tuple[str, ...]] = {}


def _child_fields(t: type) -> tuple[str, ...]:
    fields = _FIELDS.get(t)
    if fields is None:
        skip = _NO_NAMES | ({"value"} if t is ast.Constant else set())
        fields = _FIELDS[t] = tuple(f for f in t._fields if f not in skip)  # type: ignore[attr-defined]
    return fields


def _strip_and_collect(tree: ast.Module) -> tuple[list[ast.AST], set[str], set[str]]:
    """One walk: strip docstrings and type hints; collect nameable nodes in walk order.

    Returns the nodes carrying names, the names the code binds itself (imports and
    method names excluded) and the parameter names of locally defined functions.
    """
    seq: list[ast.AST] = []
    bound: set[str] = set()
    imported: set[str] = set()
    params: set[str] = set()
    methods: set[int] = set()
    todo = deque([tree])
    while todo:  # like ast.walk, but children are read after their parent is stripped
        node = todo.popleft()
        t = type(node)
        if t is ast.Name:
            seq.append(node)
            if type(node.ctx) is not ast.Load:  # type: ignore[attr-defined]
                bound.add(node.id)  # type: ignore[attr-defined]
        elif t is ast.arg:
            node.annotation = None  # type: ignore[attr-defined]
            seq.append(node)
            bound.add(node.arg)  # type: ignore[attr-defined]
        elif t is ast.keyword:
            if node.arg is not None:  # type: ignore[attr-defined]
                seq.append(node)
        elif t in _DEFS:
            node.returns = None  # type: ignore[attr-defined]
            if getattr(node, "type_params", None):
                node.type_params = []  # type: ignore[attr-defined]
            node.body = _clean_stmts(node.body, True)  # type: ignore[attr-defined]
            a = node.args  # type: ignore[attr-defined]
            for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
                if arg is not None:
                    params.add(arg.arg)
            if id(node) not in methods:
                bound.add(node.name)  # type: ignore[attr-defined]
                seq.append(node)
        elif t is ast.ClassDef:
            node.body = _clean_stmts(node.body, True)  # type: ignore[attr-defined]
            methods.update(id(item) for item in node.body if type(item) in _DEFS)  # type: ignore[attr-defined]
            bound.add(node.name)  # type: ignore[attr-defined]
            seq.append(node)
        elif t is ast.Import or t is ast.ImportFrom:
            for alias in node.names:  # type: ignore[attr-defined]
                imported.add((alias.asname or alias.name).split(".")[0])
        elif t is ast.Global or t is ast.Nonlocal:
            seq.append(node)
        elif t in _MATCH_NAMES:
            if node.name:  # type: ignore[attr-defined]
                bound.add(node.name)  # type: ignore[attr-defined]
                seq.append(node)
        if t is ast.ExceptHandler and node.name:  # type: ignore[attr-defined]
            bound.add(node.name)  # type: ignore[attr-defined]
            seq.append(node)
        fields = _STMT_LISTS.get(t)
        if fields:
            for f in fields:
                stmts = getattr(node, f)
                if stmts and _has_annassign(stmts):
                    setattr(node, f, _clean_stmts(stmts, False))
        for f in _child_fields(t):
            v = getattr(node, f, None)
            if type(v) is list:
                todo.extend(x for x in v if isinstance(x, ast.AST))
            elif isinstance(v, ast.AST):
                todo.append(v)
    return seq, bound - imported, params


def _rename(seq: list[ast.AST], bound: set[str], params: set[str]) -> None:
    """Rename bound names ``v0, v1, ...`` in order of first appearance in ``seq``."""
    mapping: dict[str, str] = {}

    def new(name: str) -> str:
        if name not in bound:
            return name
        v = mapping.get(name)
        if v is None:
            v = mapping[name] = f"v{len(mapping)}"
        return v

    for node in seq:
        t = type(node)
        if t is ast.Name:
            node.id = new(node.id)  # type: ignore[attr-defined]
        elif t is ast.arg:
            node.arg = new(node.arg)  # type: ignore[attr-defined]
        elif t is ast.keyword:
            if node.arg in params:  # type: ignore[attr-defined]
                node.arg = new(node.arg)  # type: ignore[attr-defined]
        elif t is ast.Global or t is ast.Nonlocal:
            node.names = [new(n) for n in node.names]  # type: ignore[attr-defined]
        else:  # FunctionDef, ClassDef, ExceptHandler, MatchAs, MatchStar
            node.name = new(node.name)  # type: ignore[attr-defined]


def normalize_python(source: str, tree: ast.Module | None = None) -> str | None:
    """Canonical form of Python source, or None when it does not parse.

    Two solutions that differ only in names, docstrings, comments, type hints,
    formatting or example usage normalise to the same string. Names are renamed in
    breadth-first order of the syntax tree, which is the same for any two programs of
    the same shape. A ``tree`` passed in (already parsed from ``source``) is modified.
    """
    if tree is None:
        tree = parse_python(source)
    if tree is None:
        return None
    tree.body = [
        s
        for s in tree.body
        if not (_is_main_guard(s) or _is_example_stmt(s) or _is_docstring(s))
    ]
    if _has_annassign(tree.body):
        tree.body = _clean_stmts(tree.body, False)
    try:
        seq, bound, params = _strip_and_collect(tree)
        _rename(seq, bound, params)
        return ast.unparse(tree)
    except (RecursionError, ValueError, AttributeError, TypeError):  # pragma: no cover
        return None


# ------------------------------------------------------------------- other languages

_KEYWORDS = frozenset(
    """
    abstract and as async await auto bool boolean break byte case catch char class const
    continue def default defer delete do double elif else end enum except export extends
    extern false final finally float fn for foreach func function go goto if impl implements
    import in instanceof int interface is let long loop match mod module mut namespace new
    nil none not null object of or override package pass private protected pub public raise
    return self short signed sizeof static string struct super switch template then this
    throw throws trait true try type typedef typeof union unsigned use using val var virtual
    void volatile where while with yield echo local fi done esac elsif unless begin rescue
    select from join on group by order having limit insert into values update set create
    table drop alter
    """.split()
)

_C_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_HASH_COMMENTS = re.compile(r"(?m)(^|\s)#(?!!)[^\n]*")
_DASH_COMMENTS = re.compile(r"--[^\n]*")
_HASH_LANGS = frozenset(
    {"sh", "bash", "shell", "zsh", "ruby", "rb", "perl", "r", "yaml", "yml", "toml",
     "dockerfile", "make", "makefile", "powershell", "ps1", "nim", "elixir", "julia"}
)
_DASH_LANGS = frozenset({"sql", "lua", "haskell", "hs", "ada", "elm"})


def _strip_comments(code: str, lang: str) -> str:
    if lang in _HASH_LANGS:
        return _HASH_COMMENTS.sub(r"\1", code)
    if lang in _DASH_LANGS:
        return _DASH_COMMENTS.sub("", code)
    return _C_COMMENTS.sub("", code)


def normalize_code(code: str, lang: str = "") -> list[str]:
    """Token-level normal form for non-Python code: comments dropped, names renamed."""
    tokens = tokenize(_strip_comments(code, lang.lower()))
    mapping: dict[str, str] = {}
    out: list[str] = []
    prev = ""
    for tok in tokens:
        first = tok[0]
        if (first.isalpha() or first == "_") and tok.lower() not in _KEYWORDS and prev not in (
            ".",
            "->",
            "::",
        ):
            if tok not in mapping:
                mapping[tok] = f"v{len(mapping)}"
            out.append(mapping[tok])
        else:
            out.append(tok)
        prev = tok
    return out


# ----------------------------------------------------------------------------- prose


def normalize_prose(text: str) -> list[str]:
    """Lower-cased word tokens of prose (punctuation and markdown dropped)."""
    return _WORD_RE.findall(text.lower())
