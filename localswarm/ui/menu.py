"""``localswarm up --interactive``: show the hardware, then let the user pick the plan.

Choices: the recommended plan, any feasible registry entry, or a custom
family -> size -> quantization -> instances walk where every step is checked against the
memory budget. Nothing is asked when stdin is not a TTY: the recommended plan comes back.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from ..errors import PlanError
from ..hardware.budget import BudgetRules
from ..hardware.report import hardware_table
from ..hardware.types import HardwareProfile
from ..models.planner import (
    DEFAULT_CTX,
    DEFAULT_PARALLEL,
    MAX_INSTANCES,
    Locator,
    Plan,
    VariantFit,
    list_variants,
    plan,
)
from ..models.registry import Registry, load_registry

GiB = 1024**3
MAX_TRIES = 5


class _Menu:
    def __init__(self, console: Console, input_fn: Callable[[str], str]) -> None:
        self.console, self.input_fn = console, input_fn

    def ask(self, prompt: str, options: Sequence[str], default: int = 1) -> int | None:
        """Numbered choice, 1-based; ``None`` on EOF or after too many bad answers."""
        for i, text in enumerate(options, 1):
            self.console.print(f"  [bold]{i}[/bold]) {text}")
        for _ in range(MAX_TRIES):
            try:
                answer = self.input_fn(f"{prompt} [{default}]: ").strip()
            except (EOFError, KeyboardInterrupt):
                return None
            if not answer:
                return default
            if answer.isdigit() and 1 <= int(answer) <= len(options):
                return int(answer)
            self.console.print(f"[red]Please type a number from 1 to {len(options)}.[/red]")
        return None

    def ask_int(self, prompt: str, low: int, high: int, default: int) -> int | None:
        for _ in range(MAX_TRIES):
            try:
                answer = self.input_fn(f"{prompt} ({low}-{high}) [{default}]: ").strip()
            except (EOFError, KeyboardInterrupt):
                return None
            if not answer:
                return default
            if answer.isdigit() and low <= int(answer) <= high:
                return int(answer)
            self.console.print(f"[red]Between {low} and {high}, as memory allows.[/red]")
        return None


def _show_plan(console: Console, p: Plan, title: str) -> None:
    console.print(f"[bold green]{title}[/bold green]: {p.summary()}")
    for reason in p.reasons:
        console.print(f"  - {reason}")


def _fits_table(rows: Sequence[VariantFit]) -> Table:
    table = Table(show_header=True, header_style="bold")
    for col in ("#", "Model", "Per instance", "Max instances", ""):
        table.add_column(col)
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), r.model_id, f"{r.memory.total / GiB:.2f} GiB",
                      str(min(r.max_instances, MAX_INSTANCES)),
                      "recommended" if r.recommended else ("local" if r.local else ""))
    return table


def choose_plan(
    profile: HardwareProfile,
    registry: Registry | None = None,
    *,
    console: Console | None = None,
    input_fn: Callable[[str], str] = input,
    is_tty: bool | None = None,
    ctx: int = DEFAULT_CTX,
    parallel: int = DEFAULT_PARALLEL,
    rules: BudgetRules | None = None,
    locate: Locator | None = None,
) -> Plan:
    """Let the user pick a plan; the recommended one without a TTY, on EOF or on Ctrl-C.

    ``input_fn`` and ``is_tty`` exist for tests (and for callers that read from elsewhere).
    """
    registry = registry or load_registry()
    common: dict[str, Any] = {"ctx": ctx, "parallel": parallel, "rules": rules,
                              "locate": locate}
    recommended = plan(profile, registry, **common)
    if is_tty is None:
        is_tty = sys.stdin.isatty()
    if not is_tty:
        return recommended
    console = console or Console()
    menu = _Menu(console, input_fn)
    console.print(hardware_table(profile, rules))
    _show_plan(console, recommended, "Recommended")
    choice = menu.ask("Your choice", ["Recommended", "Browse all feasible models",
                                      "Custom: family, size, quantization, instances"])
    if choice is None or choice == 1:
        return recommended
    rows = list_variants(profile, registry, **common)
    if choice == 2:
        feasible = [r for r in rows if r.fits]
        console.print(_fits_table(feasible))
        pick = menu.ask("Model", [r.model_id for r in feasible],
                        default=next((i for i, r in enumerate(feasible, 1) if r.recommended), 1))
        if pick is None:
            return recommended
        chosen = plan(profile, registry, model=feasible[pick - 1].model_id, **common)
        _show_plan(console, chosen, "Chosen")
        return chosen
    return _custom(menu, profile, registry, rows, recommended, common)


def _custom(menu: _Menu, profile: HardwareProfile, registry: Registry,
            rows: Sequence[VariantFit], recommended: Plan, common: dict[str, Any]) -> Plan:
    fit_by_id = {r.model_id: r for r in rows}

    def best(prefix: str) -> int:
        return max((r.max_instances for r in rows if r.model_id.startswith(prefix)), default=0)

    families = list(registry.families)
    fam_labels = [f"{f.name}" + ("" if best(f"{f.id}:") >= 1 else "  (nothing fits)")
                  for f in families]
    f_idx = menu.ask("Family", fam_labels)
    if f_idx is None:
        return recommended
    family = families[f_idx - 1]
    variants = sorted(family.variants, key=lambda v: -v.params)
    size_labels = [f"{v.size}" + ("" if best(f"{family.id}:{v.size}:") >= 1 else
                                  "  (does not fit)") for v in variants]
    s_idx = menu.ask("Size", size_labels)
    if s_idx is None:
        return recommended
    variant = variants[s_idx - 1]
    quants = sorted(variant.quants, key=lambda q: -_rank(q))
    q_rows = [fit_by_id[f"{family.id}:{variant.size}:{q}"] for q in quants]
    q_labels = [f"{q} - {r.reason}" for q, r in zip(quants, q_rows)]
    default_q = next((i for i, r in enumerate(q_rows, 1) if r.max_instances >= 1), 1)
    while True:
        q_idx = menu.ask("Quantization", q_labels, default=default_q)
        if q_idx is None:
            return recommended
        row = q_rows[q_idx - 1]
        if row.max_instances >= 1:
            break
        menu.console.print(f"[red]{row.model_id} does not fit: {row.reason}[/red]")
    high = min(row.max_instances, MAX_INSTANCES * 8)
    n = menu.ask_int("Instances", 1, high, default=min(row.max_instances, MAX_INSTANCES))
    if n is None:
        return recommended
    try:
        chosen = plan(profile, registry, model=row.model_id, instances=n, **common)
    except PlanError as exc:  # cannot happen when max_instances is right; be safe anyway
        menu.console.print(f"[red]{exc}[/red]")
        return recommended
    _show_plan(menu.console, chosen, "Chosen")
    return chosen


def _rank(quant: str) -> int:
    from ..models.registry import quant_rank

    return quant_rank(quant)
