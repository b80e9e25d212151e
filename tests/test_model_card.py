"""Model cards on ``hf://`` pushes: README.md with YAML front matter from the snapshot's info.

Every push goes through the real huggingface_hub client to the FakeHub of tests/hub_server.py
(fixture ``hub``); cards are read back from the commit the push made and parsed with
huggingface_hub's own ``ModelCard``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hub_server import FakeHub
from huggingface_hub import HfApi, ModelCard

import lamina
from lamina.hub.card import MARKER

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")

CARD = "README.md"


def new_repo_id() -> str:
    return f"{FakeHub.USER}/card-{uuid.uuid4().hex[:10]}"


def snap(path: Path, seed: int = 0, files: dict[str, Any] | None = None, **info: Any) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {f"{layer}.weight": rng.standard_normal((4, 4)).astype("float32") for layer in ("enc", "dec")}
    lamina.save(tensors, path, info=info or None, files=files, training={"step": 10 * (seed + 1)})
    return path


def card_of(hub: FakeHub, repo_id: str, revision: str = "main") -> ModelCard:
    return ModelCard(hub.files(repo_id, revision)[CARD].decode("utf-8"))


def commit_posts(hub: FakeHub, repo_id: str) -> int:
    return sum(1 for r in hub.requests if r[0] == "POST" and r[1].startswith(f"/api/models/{repo_id}/commit/"))


# ------------------------------------------------------------------------------------------ front matter
def test_a_push_writes_a_card_with_front_matter_from_the_info(hub: FakeHub, tmp_path: Path) -> None:
    repo_id = new_repo_id()
    path = snap(tmp_path / "s", name="tiny-lm", license="Apache-2.0", tags=["demo", "tiny"], version="1.2",
                description="A tiny model | for tests.",
                extra={"base_model": "gpt2", "pipeline_tag": "text-generation", "datasets": ["wikitext"]})
    result = lamina.push(path, f"hf://{repo_id}", tag="v1")
    card = card_of(hub, repo_id, result.revision)  # in the commit of the push itself
    assert card.data.to_dict() == {"base_model": "gpt2", "datasets": ["wikitext"], "library_name": "lamina",
                                   "license": "apache-2.0", "pipeline_tag": "text-generation",
                                   "tags": ["demo", "tiny", "lamina"]}
    text = card.text
    assert MARKER in text and "# tiny-lm" in text and "A tiny model | for tests." in text
    assert f"`{result.snapshot}`" in text and f'lamina.open("hf://{repo_id}")' in text
    assert "| step | 10 |" in text and "| version | 1.2 |" in text
    assert CARD not in lamina.open(f"hf://{repo_id}@v1", cache=False).files  # not a snapshot file
    assert result.uploaded_files == len(lamina.open(path).manifest.files) + 1  # the card is not counted


def test_minimal_info_gives_a_minimal_card(hub: FakeHub, tmp_path: Path) -> None:
    repo_id = new_repo_id()
    lamina.push(snap(tmp_path / "s"), f"hf://{repo_id}")
    card = card_of(hub, repo_id)
    assert card.data.to_dict() == {"library_name": "lamina", "tags": ["lamina"]}
    assert f"# {repo_id.split('/')[1]}" in card.text


@pytest.mark.parametrize("given, expected", [
    ("MIT", {"license": "mit"}), ("cc by 4.0", {"license": "cc-by-4.0"}), ("llama3.1", {"license": "llama3.1"}),
    ("Acme Research License v2", {"license": "other", "license_name": "acme-research-license-v2"}),
])
def test_licenses_the_hub_does_not_know_become_other_with_a_name(hub: FakeHub, tmp_path: Path, given: str,
                                                                 expected: dict[str, str]) -> None:
    repo_id = new_repo_id()
    lamina.push(snap(tmp_path / "s", license=given), f"hf://{repo_id}")
    data = card_of(hub, repo_id).data.to_dict()
    assert {k: v for k, v in data.items() if k.startswith("license")} == expected


def test_library_name_is_transformers_for_a_transformers_config(hub: FakeHub, tmp_path: Path) -> None:
    """transformers' from_pretrained loads such a snapshot as it is (tests/test_hub.py), so the card
    names it; info.extra["library_name"] overrides the choice."""
    repo_id = new_repo_id()
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    lamina.push(snap(tmp_path / "a", files={"config.json": config}), f"hf://{repo_id}")
    card = card_of(hub, repo_id)
    assert card.data.library_name == "transformers" and f'AutoModel.from_pretrained("{repo_id}")' in card.text
    other = new_repo_id()
    lamina.push(snap(tmp_path / "b", files={"config.json": {"hidden": 8}}), f"hf://{other}")
    assert card_of(hub, other).data.library_name == "lamina"
    third = new_repo_id()
    lamina.push(snap(tmp_path / "c", files={"config.json": config}, extra={"library_name": "peft"}), f"hf://{third}")
    assert card_of(hub, third).data.library_name == "peft"


@pytest.mark.parametrize("extra", [{"base_model": 3}, {"pipeline_tag": ["a", "b"]}, {"datasets": []}])
def test_card_fields_of_the_wrong_type_are_refused_before_anything_is_created(hub: FakeHub, tmp_path: Path,
                                                                              extra: dict[str, Any]) -> None:
    repo_id = new_repo_id()
    with pytest.raises(lamina.FormatError, match=r"info\.extra\["):
        lamina.push(snap(tmp_path / "s", extra=extra), f"hf://{repo_id}")
    assert not hub.has_repo(repo_id)
    lamina.push(tmp_path / "s", f"hf://{repo_id}", card=False)  # without a card it goes through
    assert CARD not in hub.files(repo_id)


def test_a_hub_refusing_the_card_metadata_is_a_format_error(hub: FakeHub, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The real hub validates README.md's front matter before the commit (huggingface_hub asks
    /api/validate-yaml, which the FakeHub always accepts): a refusal commits nothing."""
    def refuse(self: HfApi, content: str, **kwargs: Any) -> None:
        raise ValueError('Invalid metadata in README.md.\n- "license" must be one of [...]')

    monkeypatch.setattr(HfApi, "_validate_yaml", refuse)
    repo_id = new_repo_id()
    with pytest.raises(lamina.FormatError, match=r"refused README\.md.*card=False"):
        lamina.push(snap(tmp_path / "s"), f"hf://{repo_id}")
    assert commit_posts(hub, repo_id) == 0 and CARD not in hub.files(repo_id)


# ------------------------------------------------------------------------------------------ updates
def test_a_re_push_updates_the_generated_card_and_an_identical_one_commits_nothing(hub: FakeHub,
                                                                                    tmp_path: Path) -> None:
    repo_id = new_repo_id()
    first = lamina.push(snap(tmp_path / "a", name="m", license="mit"), f"hf://{repo_id}")
    old = hub.files(repo_id)[CARD]
    hub.reset()
    second = lamina.push(snap(tmp_path / "b", seed=1, name="m", license="apache-2.0", tags=["v2"]), f"hf://{repo_id}")
    assert second.created and commit_posts(hub, repo_id) == 1  # card and snapshot in one commit
    card = card_of(hub, repo_id)
    assert card.data.license == "apache-2.0" and card.data.tags == ["v2", "lamina"]
    assert f"`{second.snapshot}`" in card.text and first.snapshot not in card.text
    assert hub.files(repo_id, first.revision)[CARD] == old  # history keeps the first card
    hub.reset()
    again = lamina.push(tmp_path / "b", f"hf://{repo_id}")
    assert not again.created and commit_posts(hub, repo_id) == 0


def test_a_snapshot_with_its_own_readme_keeps_it_byte_for_byte(hub: FakeHub, tmp_path: Path) -> None:
    own = b"---\nlicense: mit\nlibrary_name: mine\n---\n\n# Hand-written\n\nNo trailing newline, CRLF:\r\nkept"
    repo_id = new_repo_id()
    path = snap(tmp_path / "s", files={CARD: own}, name="generated-name", license="apache-2.0")
    lamina.push(path, f"hf://{repo_id}")
    assert hub.files(repo_id)[CARD] == own
    pulled = lamina.pull(f"hf://{repo_id}", tmp_path / "pulled")
    assert pulled.read_file(CARD) == own
    # a later snapshot without a card of its own replaces the previous snapshot's card
    lamina.push(snap(tmp_path / "t", seed=1, name="next"), f"hf://{repo_id}")
    assert MARKER in card_of(hub, repo_id).text and "# next" in card_of(hub, repo_id).text


def test_a_readme_written_on_the_hub_is_left_alone(hub: FakeHub, tmp_path: Path) -> None:
    repo_id = new_repo_id()
    lamina.push(snap(tmp_path / "a", name="m"), f"hf://{repo_id}")
    human = b"---\nlicense: mit\n---\n# Written on the website\n"
    hub.commit(repo_id, {CARD: human}, "edit the card")
    lamina.push(snap(tmp_path / "b", seed=1, name="m2"), f"hf://{repo_id}")
    assert hub.files(repo_id)[CARD] == human
    # an edited card that keeps the marker line is still lamina's to regenerate
    hub.commit(repo_id, {CARD: b"---\nlicense: mit\n---\n" + MARKER.encode() + b"\n# stale\n"}, "marker kept")
    lamina.push(tmp_path / "a", f"hf://{repo_id}")
    assert "# m\n" in card_of(hub, repo_id).text


def test_card_false_leaves_readme_untouched(hub: FakeHub, tmp_path: Path) -> None:
    repo_id = new_repo_id()
    lamina.push(snap(tmp_path / "a"), f"hf://{repo_id}", card=False)
    assert CARD not in hub.files(repo_id)
    lamina.push(tmp_path / "a", f"hf://{repo_id}")  # same snapshot: the card alone makes a commit
    assert CARD in hub.files(repo_id)


def test_cli_push_writes_the_card(hub: FakeHub, tmp_path: Path) -> None:
    repo_id = new_repo_id()
    path = snap(tmp_path / "s", name="from-cli", license="mit")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "HUGGINGFACE_")) and k != "TRANSFORMERS_OFFLINE"}
    env.update(hub.env(tmp_path / "hf-home", token=FakeHub.WRITE_TOKEN))
    res = subprocess.run([sys.executable, "-m", "lamina", "push", str(path), f"hf://{repo_id}"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    card = card_of(hub, repo_id)
    assert card.data.to_dict() == {"library_name": "lamina", "license": "mit", "tags": ["lamina"]}
    assert "# from-cli" in card.text
