"""The whole harness end to end over FAKE llama-servers (tests/fakes/fake_llama_server.py).

The fakes are real processes started by the project's Supervisor (the ``--spawn`` path);
they answer chosen replies, so the figures are known in advance. The real-model run is
in docs/consensus.md, not a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import fake_binary

GOOD = "```python\ndef has_close_elements(numbers, threshold):\n" \
       "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```"
GOOD_RENAMED = "```python\ndef has_close_elements(nums, t):\n" \
               "    return any(abs(x - y) < t for k, x in enumerate(nums) for y in nums[k + 1:])\n```"
BAD = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"


def test_spawned_fakes_to_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from localswarm.eval.humaneval import main

    # instance 0 and 1 agree (renamed copies of a correct solution); instance 2 is wrong
    monkeypatch.setenv("FAKE_REPLIES", json.dumps([GOOD, GOOD_RENAMED, BAD]))
    monkeypatch.setenv("LOCALSWARM_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF fake")
    save = tmp_path / "samples.jsonl"
    out = tmp_path / "consensus.md"
    rc = main([
        "--spawn", "--model", str(model), "--llama-server", str(fake_binary(tmp_path)),
        "--instances", "3", "--threads", "3", "--parallel", "1", "--n", "3", "--limit", "1",
        "--save", str(save), "--out", str(out), "--label", "fake run",
    ])
    assert rc == 0
    recs = [json.loads(line) for line in save.read_text().splitlines()]
    assert len(recs) == 3 and len({r["seed"] for r in recs}) == 3
    meta = json.loads(save.with_suffix(".meta.json").read_text())
    assert meta["n"] == 3 and meta["spawn"]["instances"] == 3
    text = out.read_text()
    assert "fake run" in text
    assert "| single-sample pass@1 (mean over all samples) | 66.7% |" in text
    assert "| **voted pass@1 (`similarity`, the default)** | **100.0%** |" in text  # the pair wins
    assert "| oracle pass@3 (any sample passes) | 100.0% |" in text
    # recompute from the saved samples only, no generation
    rc = main(["--samples", str(save), "--out", str(out), "--label", "fake run"])
    assert rc == 0
    assert out.read_text().count("### fake run") == 1


def test_interleaved_runs_and_generated_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--seeds: three independent runs in one swarm, one file each, problem by problem;
    --tests-seed: the CodeT round's assert-line requests beside them (FAKE llama-servers)."""
    from localswarm.eval.humaneval import main

    # each reply carries an assert block too, so the CodeT round finds generated tests
    good = GOOD + "\n```python\nassert has_close_elements([1.0, 1.05], 0.5) == True\n```"
    bad = BAD + "\n```python\nassert has_close_elements([1.0, 5.0], 0.5) == False\n```"
    monkeypatch.setenv("FAKE_REPLIES", json.dumps([good, bad]))
    monkeypatch.setenv("LOCALSWARM_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF fake")
    save = tmp_path / "s.jsonl"
    rc = main([
        "--spawn", "--model", str(model), "--llama-server", str(fake_binary(tmp_path)),
        "--instances", "2", "--threads", "2", "--parallel", "1", "--n", "2", "--limit", "2",
        "--save", str(save), "--seeds", "1234", "1334", "1434", "--tests-seed", "1534",
    ])
    assert rc == 0
    assert not save.exists()  # one file per run instead
    seeds = set()
    for base in (1234, 1334, 1434):
        path = tmp_path / f"s-seed{base}.jsonl"
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        assert sorted((r["task_id"], r["sample"]) for r in recs) == [
            ("HumanEval/0", 0), ("HumanEval/0", 1), ("HumanEval/1", 0), ("HumanEval/1", 1)]
        assert {r["seed"] for r in recs} == {base, base + 1, base + 1000, base + 1001}
        seeds |= {r["seed"] for r in recs}
        meta = json.loads(path.with_suffix(".meta.json").read_text())
        assert meta["seed"] == base and meta["generation"]["shared_with_runs"] == 4
    tests = [json.loads(line) for line in (tmp_path / "s-tests.jsonl").read_text().splitlines()]
    assert len(tests) == 4 and {t["task"] for t in tests} == {"tests"}
    assert len(seeds | {t["seed"] for t in tests}) == 16  # no seed used twice

    # offline: the three runs side by side and pooled, with the CodeT selections
    out = tmp_path / "consensus.md"
    rc = main(["--samples", *(str(tmp_path / f"s-seed{b}.jsonl") for b in (1234, 1334, 1434)),
               "--tests", str(tmp_path / "s-tests.jsonl"), "--out", str(out), "--label", "three runs"])
    assert rc == 0
    text = out.read_text()
    assert "### three runs" in text and "**2 problems every run covers**" in text
    assert "| selection | seed 1234 | seed 1334 | seed 1434 | **pooled** |" in text
    for row in ("| `similarity` |", "| `exec` |", "| `codet` |", "| `exec+codet` |"):
        assert text.count(row) == 2  # pass@1 and selection efficiency
    # HumanEval/0: the good answer passes the hidden tests, the bad one does not, so
    # wherever a run got one of each the oracle is 100% and random 50%
    assert "CodeT round (s-tests.jsonl)" in text

    with pytest.raises(ValueError, match="share seed"):
        main(["--spawn", "--model", str(model), "--llama-server", str(fake_binary(tmp_path)),
              "--n", "5", "--limit", "2", "--save", str(save), "--seeds", "1234", "1236"])
