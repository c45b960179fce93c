"""`localswarm down` and `status` start light: no numpy, uvicorn or zeroconf (issue 11).

Each check runs the real CLI in a fresh interpreter (a subprocess), so modules imported
by earlier tests in this process cannot hide an eager import.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("numpy", "uvicorn", "zeroconf", "starlette", "rapidfuzz", "prometheus_client", "localswarm.gateway")

PROBE = """
import json, sys
from localswarm import cli
try:
    cli.main([sys.argv[1]], standalone_mode=False)
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in {heavy!r}))
print(json.dumps(heavy))
"""


@pytest.mark.parametrize("command", ["down", "status"])
def test_command_imports_no_heavy_module(command: str) -> None:
    """With no swarm running, the command answers without importing the gateway's stack."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), command],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == [], f"`localswarm {command}` imported {heavy}"


def test_the_probe_sees_an_eager_import() -> None:
    """The check can fail: an import of the gateway before the command shows up in its result."""
    probe = PROBE.format(heavy=HEAVY).replace("from localswarm import cli", "from localswarm import cli\nimport localswarm.gateway.app")
    out = subprocess.run([sys.executable, "-c", probe, "down"], capture_output=True, text=True, timeout=60)
    heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"numpy", "starlette", "localswarm.gateway.app"} <= set(heavy)
