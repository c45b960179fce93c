"""A lighter run of ``bench/federation_scale.py``: 1 and 3 namespaced nodes over the FAKE llama-server.

The full bench (10 nodes, 30 instances) records its figures in ``docs/benchmarks.md``;
this keeps the harness honest in CI: mDNS discovery with no static peers, every node's
vote counted, and figures within generous bounds for 2 shared cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import netns
from tests.helpers import load_bench

pytestmark = pytest.mark.integration

_REASON = netns.unavailable_reason()
if _REASON is not None:
    pytestmark = [pytest.mark.integration, pytest.mark.skip(reason=f"federation scale test skipped: {_REASON}")]


def test_scale_harness_small(tmp_path: Path) -> None:
    bench = load_bench("federation_scale")
    rows = bench.run([1, 3], instances=3, requests=3)  # asserts every node's vote is counted
    assert [r["nodes"] for r in rows] == [1, 3] and rows[1]["instances"] == 9
    three = rows[1]
    assert three["discovery_after_last_up_s"] < 5.0
    assert three["vote_median_s"] < 5.0
    text = bench.markdown(rows, instances=3, requests=3, fake_delay=0.05)
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    bench.write_section(bench.SECTION, text, doc)
    bench.write_section(bench.SECTION, text, doc)  # idempotent: replaced, not appended twice
    out = doc.read_text()
    assert out.count("## Federation scale") == 1 and "## Other\n\nkept" in out and "FAKE llama-server" in out
