"""Hugging Face names (`pull`/`up --model Org/Repo-GGUF:QUANT`), `ls` and `rm`, against the
FAKE Hub (tests/fakes/hf_mimic.py: the Hub's API, its 302 to the CDN, Range → 206)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from localswarm.backends.llama_server import embedded_model_path
from localswarm.cli import main
from localswarm.errors import ModelNotFound, PlanError
from localswarm.models.hf_names import HFName, choose_file, parse_hf_name
from localswarm.provision import resolve_model
from tests.fakes.hf_mimic import HFMimic

REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
Q4 = "SmolLM2-135M-Instruct-Q4_1.gguf"
Q8 = "SmolLM2-135M-Instruct-Q8_0.gguf"


@pytest.mark.parametrize(("spec", "want"), [
    ("Qwen/Qwen2.5-Coder-7B-Instruct-GGUF", HFName("Qwen/Qwen2.5-Coder-7B-Instruct-GGUF", None)),
    ("Qwen/Qwen2.5-Coder-7B-Instruct-GGUF:q4_k_m", HFName("Qwen/Qwen2.5-Coder-7B-Instruct-GGUF", "q4_k_m")),
    ("hf.co/bartowski/Foo-GGUF:Q8_0", HFName("bartowski/Foo-GGUF", "Q8_0")),
    ("https://huggingface.co/bartowski/Foo-GGUF", HFName("bartowski/Foo-GGUF", None)),
    ("qwen2.5-coder:7b:q4_k_m", None),  # a registry id
    ("models/foo.gguf", None),  # a path
    ("/abs/path/x", None),
    ("auto", None),
])
def test_parse_hf_name(spec: str, want: HFName | None) -> None:
    assert parse_hf_name(spec) == want


def test_a_local_folder_named_like_a_repo_stays_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "org" / "repo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert parse_hf_name("org/repo") is None
    assert parse_hf_name("hf.co/org/repo") == HFName("org/repo", None)


def test_choose_file_by_quant_like_ollama() -> None:
    files = ["README.md", "Foo-Q4_K_M.gguf", "Foo-Q4_K_S.gguf", "Foo-Q8_0.gguf", "Foo-mmproj-f16.gguf",
             "Big-Q6_K-00001-of-00002.gguf", "Big-Q6_K-00002-of-00002.gguf"]
    assert choose_file(HFName("o/r", None), files) == "Foo-Q4_K_M.gguf"  # the default quant
    assert choose_file(HFName("o/r", "q8_0"), files) == "Foo-Q8_0.gguf"
    assert choose_file(HFName("o/r", "Q6_K"), files) == "Big-Q6_K-00001-of-00002.gguf"
    with pytest.raises(ModelNotFound, match="no IQ2_XS file; choose one of: o/r:Big-Q6_K|o/r:Q6_K"):
        choose_file(HFName("o/r", "IQ2_XS"), files)
    with pytest.raises(ModelNotFound, match="no GGUF file"):
        choose_file(HFName("o/r", None), ["model.safetensors"])


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HFMimic]:
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from huggingface_hub.utils import _detect_agent

        monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}}, raising=False)
    except ImportError:
        pass
    data = embedded_model_path().read_bytes()  # a real GGUF (SmolLM2 135M), 94 MiB
    with HFMimic() as mimic:
        mimic.add_file(REPO, Q4, data)
        mimic.add_file(REPO, Q8, data)
        mimic.add_file(REPO, "README.md", b"# model card\n", lfs=False)
        monkeypatch.setenv("HF_ENDPOINT", mimic.endpoint)
        yield mimic


def _cdn_gets(hub: HFMimic) -> list[str | None]:
    return [r.range for r in hub.requests if r.host == "cdn" and r.method == "GET"]


def test_pull_ls_rm_an_hf_name_fake_hub(hub: HFMimic) -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["pull", f"hf.co/{REPO}:Q4_1"])
    assert out.exit_code == 0, out.output
    assert "read from its GGUF header before the download" in out.output
    # First the header with a Range request, then the whole file.
    gets = _cdn_gets(hub)
    assert gets[0] == f"bytes=0-{8 * 1024 * 1024 - 1}" and gets[-1] is None
    assert all(r.file != Q8 for r in hub.requests)  # the other quant never fetched

    listed = json.loads(runner.invoke(main, ["ls", "--json"]).output)
    assert [(m["repo"], m["file"]) for m in listed] == [(REPO, Q4)]
    assert listed[0]["size"] == embedded_model_path().stat().st_size and Path(listed[0]["path"]).is_file()
    assert listed[0]["last_used"] is None  # downloaded, never started
    from localswarm import runner as swarm_runner
    from localswarm.config import Settings

    started = swarm_runner.resolve(Settings(model=f"{REPO}:Q4_1"))  # what `up --model` does before serving
    assert str(started.path) == listed[0]["path"] and started.model_id == f"{REPO}:q4_1".lower()
    assert [r for r in _cdn_gets(hub) if r is None] == [None]  # the cached file is not fetched again
    listed = json.loads(runner.invoke(main, ["ls", "--json"]).output)
    assert listed[0]["last_used"] is not None
    table = runner.invoke(main, ["models", "--local"]).output
    assert "SmolLM2-135M-Instruct-Q4_1.gguf" in table.replace("\n", "") or REPO.split("/")[1][:10] in table

    gone = runner.invoke(main, ["rm", f"{REPO}:q4_1"])
    assert gone.exit_code == 0 and "removed" in gone.output, gone.output
    assert json.loads(runner.invoke(main, ["ls", "--json"]).output) == []
    assert not Path(listed[0]["path"]).exists()
    again = runner.invoke(main, ["rm", f"{REPO}:q4_1"])
    assert again.exit_code == 1 and "no downloaded model matches" in again.output


def test_a_model_that_does_not_fit_is_refused_before_the_download_fake_hub(hub: HFMimic) -> None:
    with pytest.raises(PlanError, match="not downloaded"):
        resolve_model(f"{REPO}:Q8_0", instances=64, ctx=32768, parallel=8, progress=False)
    assert _cdn_gets(hub) and all(r is not None for r in _cdn_gets(hub))  # only Range reads


def test_unknown_quant_names_the_ones_there_fake_hub(hub: HFMimic) -> None:
    out = CliRunner().invoke(main, ["pull", f"{REPO}:Q5_K_M"])
    assert out.exit_code == 1
    assert f"{REPO}:Q4_1" in out.output and f"{REPO}:Q8_0" in out.output
    assert _cdn_gets(hub) == []


def test_rm_refuses_the_running_model(tmp_path: Path) -> None:
    from localswarm.models.local import remove

    root = tmp_path / "models"
    snap = root / "models--o--r" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    f = snap / "r-Q4_K_M.gguf"
    f.write_bytes(b"GGUF")
    with pytest.raises(Exception, match="in use by the running swarm"):
        remove("o/r", running_path=str(f), root=root)
    assert f.exists()
    assert [r.file for r in remove("o/r:Q4_K_M", root=root)] == ["r-Q4_K_M.gguf"]
    assert not (root / "models--o--r").exists()


def test_a_downloaded_hf_model_starts_offline_fake_hub(hub: HFMimic, monkeypatch: pytest.MonkeyPatch) -> None:
    first = resolve_model(f"{REPO}:Q4_1", progress=False)
    hub.stop()  # the network goes away
    again = resolve_model(f"{REPO}:Q4_1", progress=False)
    assert again.path == first.path and "cannot be reached" in again.notes[0]
    with pytest.raises(Exception, match="(?i)cannot list|not found|connect"):
        resolve_model(f"{REPO}:Q8_0", progress=False)  # never downloaded: a clear error
