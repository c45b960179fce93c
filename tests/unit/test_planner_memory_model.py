"""The per-backend memory model (issue 13), the budget fill and the phone rules (issue 14)."""

from __future__ import annotations

import pytest

from localswarm.hardware.synthetic import PHONE_RAM, _phone, reference_profiles
from localswarm.hardware.types import CPUInfo, HardwareProfile
from localswarm.models.planner import (
    FILL_CEILING,
    FILL_MAX_PARALLEL,
    FILL_TARGET,
    MOBILE_CTX,
    SHARED_CODE,
    estimate_memory,
    mobile_allows,
    plan,
    quant_bits,
)
from localswarm.models.registry import load_registry

GiB = 1024**3
REG = load_registry()
P = reference_profiles()
NOWHERE = lambda _ref: None  # noqa: E731  nothing downloaded


def _plan(profile: HardwareProfile, **kw: object):  # type: ignore[no-untyped-def]
    return plan(profile, REG, locate=NOWHERE, **kw)  # type: ignore[arg-type]


# --- N instances per backend ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpu", "metal"])
def test_mmapped_weights_count_once_per_host(backend: str) -> None:
    """CPU and unified memory: one set of weight (and code) pages for every instance."""
    est = estimate_memory(REG.resolve("qwen2.5-coder:7b:q4_k_m"), ctx=4096, backend=backend)
    assert est.shared == est.weights + SHARED_CODE
    per = est.kv_cache + est.compute + est.overhead - SHARED_CODE
    assert est.per_extra_instance == per
    assert est.for_instances(1) == est.total
    assert est.for_instances(3) == est.weights + SHARED_CODE + 3 * per
    assert est.for_instances(0) == 0


@pytest.mark.parametrize("backend", ["cuda", "rocm", "vulkan"])
def test_discrete_gpu_weights_count_per_process(backend: str) -> None:
    """Each process uploads its own copy of the weights to VRAM."""
    est = estimate_memory(REG.resolve("qwen2.5-coder:7b:q4_k_m"), ctx=4096, backend=backend)
    assert est.shared == 0
    assert est.for_instances(3) == 3 * est.total
    assert est.instances_within(3 * est.total) == 3
    assert est.instances_within(3 * est.total - 1) == 2


def test_shared_weights_let_more_instances_fit_on_cpu() -> None:
    """The capacity follows the model: 1 + (usable - first) // each further instance."""
    est = estimate_memory(REG.resolve("qwen2.5-coder:7b:q4_k_m"), ctx=4096, backend="cpu")
    usable = 12 * GiB
    n = est.instances_within(usable)
    assert n == 1 + (usable - est.total) // est.per_extra_instance
    assert n > usable // est.total  # counted per instance, fewer would fit
    assert est.for_instances(n) <= usable < est.for_instances(n + 1)
    assert est.instances_within(est.total - 1) == 0


def test_plan_totals_follow_the_backend() -> None:
    """The plan's total: weights once on a CPU host, once per instance on a GPU."""
    cpu = _plan(P["CPU-only laptop 16 GB"], model="qwen2.5-coder:0.5b:q4_k_m", instances=3,
                fill=False)
    m = cpu.memory
    assert cpu.total_memory == m.shared + 3 * m.per_extra_instance < 3 * m.total
    assert any("weights mmapped" in r for r in cpu.reasons)
    gpu = _plan(P["RTX 4090 24 GB"], model="qwen2.5-coder:0.5b:q4_k_m", instances=3, fill=False)
    assert gpu.total_memory == 3 * gpu.memory.total
    two = _plan(P["2x RTX 4090 24 GB"], model="qwen2.5-coder:14b:q4_k_m", instances=2,
                fill=False)
    assert [p.memory for p in two.placements] == [two.memory.total] * 2


# --- the fill ---------------------------------------------------------------------------


@pytest.mark.parametrize("machine", [m for m in P if "phone" not in m])
def test_reference_machines_use_over_80_percent(machine: str) -> None:
    """The seed's "more than 80% of available memory used", each device within budget."""
    p = _plan(P[machine])
    assert p.used_fraction > FILL_TARGET, p.reasons
    for pl in p.placements:
        assert pl.memory <= pl.usable


def test_fill_grows_context_then_slots_without_costing_time() -> None:
    """The laptop's choice (0.5B x 2, set by the time target) leaves memory free: the
    context grows to the model's trained 32k, then slots are added, up to the ceiling."""
    profile = P["CPU-only laptop 16 GB"]
    bare = _plan(profile, ctx=8192, parallel=1, fill=False)
    full = _plan(profile, ctx=8192, parallel=1)
    assert (full.model_id, full.instances) == (bare.model_id, bare.instances)
    assert bare.used_fraction < 0.5 and bare.ctx == 8192 and bare.parallel == 1
    assert full.ctx == REG.resolve(full.model_id).variant.arch.context == 32768
    assert full.parallel > 1
    assert FILL_TARGET < full.used_fraction <= FILL_CEILING
    assert full.speed is not None and bare.speed is not None
    assert full.speed.seconds == bare.speed.seconds  # the time budget still holds
    assert any(r.startswith("fill: context per slot 8192 -> 32768") for r in full.reasons)
    if full.parallel < FILL_MAX_PARALLEL:  # it stopped because one more slot passes the ceiling
        more = estimate_memory(REG.resolve(full.model_id), ctx=full.ctx,
                               parallel=full.parallel + 1, backend="cpu")
        assert more.for_instances(full.instances) > FILL_CEILING * full.budget.total


def test_fill_never_shrinks_and_leaves_a_full_plan_alone() -> None:
    """A plan already over 80% keeps its ctx; a larger asked ctx is never lowered."""
    gpu = _plan(P["RTX 4090 24 GB"])
    assert gpu.used_fraction > FILL_TARGET and gpu.ctx == 8192 and gpu.parallel == 1
    assert not any(r.startswith("fill:") for r in gpu.reasons)
    big = _plan(P["CPU-only laptop 16 GB"], ctx=65536, parallel=2)
    assert big.ctx == 65536 and big.parallel >= 2


def test_fill_respects_the_time_target_choice() -> None:
    """Filling is not a way around issue 15: the vote width and model stay the time-bound ones."""
    m4 = P["Apple M4 Pro 48 GB"]
    for target in (30.0, None):
        a = _plan(m4, latency_target=target, fill=False)
        b = _plan(m4, latency_target=target)
        assert (a.model_id, a.instances) == (b.model_id, b.instances)


# --- phones -----------------------------------------------------------------------------


def test_quant_bits_and_mobile_rule() -> None:
    assert [quant_bits(q) for q in ("q4_k_m", "iq3_xs", "q8_0", "f16", "bf16", "x")] == \
        [4, 3, 8, 16, 16, None]
    assert mobile_allows(REG.resolve("qwen2.5-coder:3b:q4_k_m"))
    assert mobile_allows(REG.resolve("qwen2.5-coder:1.5b:q4_k_m"))
    assert not mobile_allows(REG.resolve("qwen2.5-coder:1.5b:q5_k_m"))  # above Q4
    assert not mobile_allows(REG.resolve("qwen2.5-coder:0.5b:q4_k_m"))  # below 1B
    assert not mobile_allows(REG.resolve("qwen2.5-coder:7b:q4_k_m"))  # above 3B


@pytest.mark.parametrize("gb", sorted(PHONE_RAM))
def test_phone_plans_1_to_3b_at_q4_ctx_2048_in_a_quarter_of_ram(gb: int) -> None:
    """The seed's Android/Termux rules (section 7.3) for a 6, 8 and 12 GB phone."""
    phone = P[f"Android phone {gb} GB"]
    p = _plan(phone, ctx=16384, parallel=2)  # today's defaults: the phone rule wins
    ref = REG.resolve(p.model_id)
    assert not p.embedded
    assert 1e9 <= ref.variant.params <= 3.5e9
    bits = quant_bits(p.quant)
    assert bits is not None and bits <= 4
    assert p.ctx == MOBILE_CTX and p.parallel >= 2  # the fill adds slots, not context
    assert p.total_memory <= p.budget.total <= 0.25 * phone.ram_total
    assert p.instances >= 2
    assert any("phone: context 2048" in r for r in p.reasons)


def test_phone_where_nothing_fits_says_why() -> None:
    """A 4 GB phone (25% = 0.9 GiB) cannot hold any 1-3B model at Q4: the embedded model
    runs, and the reasons name the smallest candidate and what it would need."""
    p = _plan(_phone(3_820_000_000))
    assert p.embedded and p.ctx == MOBILE_CTX
    why = next(r for r in p.reasons if r.startswith("phone: no 1-3B model"))
    assert "25% of RAM" in why and "needs" in why


def test_phone_explicit_model_keeps_the_context_rule() -> None:
    """A model named by the user is run, still at ctx 2048."""
    p = _plan(P["Android phone 8 GB"], model="qwen2.5-coder:0.5b:q4_k_m", ctx=8192)
    assert p.model_id == "qwen2.5-coder:0.5b:q4_k_m" and p.ctx == MOBILE_CTX
