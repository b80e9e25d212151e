from __future__ import annotations

from pathlib import Path

import pytest
import torch


class TiedLM(torch.nn.Module):
    """A small model with every kind of state: tied weights, LayerNorm, BatchNorm buffers."""

    def __init__(self, vocab: int = 16, dim: int = 8) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.bn = torch.nn.BatchNorm1d(dim)
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.norm(self.proj(self.embed(tokens)))))


@pytest.fixture
def tied_model() -> TiedLM:
    torch.manual_seed(0)
    return TiedLM()


@pytest.fixture
def snapshot(tmp_path: Path, tied_model: TiedLM) -> Path:
    path = tmp_path / "snap"
    import lamina

    lamina.save(tied_model, path, info={"name": "tied"}, files={"config.json": {"dim": 8}})
    return path


# ---------------------------------------------------------------- S3 (a moto server) for store tests
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import boto3  # noqa: E402
from servers import start_moto  # noqa: E402


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL of one moto S3 server on 127.0.0.1 for the whole session."""
    server, endpoint = start_moto()
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str) -> Any:
    """A boto3 S3 client for the moto server (to set up and inspect buckets directly)."""
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A fresh, uniquely named, empty bucket."""
    name = f"lamina-test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, Any]:
    """fsspec ``storage_options`` for s3fs against the moto server."""
    return {"key": "testing", "secret": "testing",
            "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}


# ---------------------------------------------------------------- Hugging Face Hub (a FakeHub) for hub tests
from hub_server import FakeHub  # noqa: E402


@pytest.fixture(scope="session")
def hub_server() -> Iterator[FakeHub]:
    """One fake Hub on 127.0.0.1 (API port + LFS storage/CDN port) for the whole session."""
    with FakeHub() as server:
        yield server


@pytest.fixture
def hub(hub_server: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """The session FakeHub with counters reset and huggingface_hub pointed at it for this test."""
    from huggingface_hub import constants, hf_api

    endpoint = hub_server.endpoint
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # 2.x uploads via Xet whenever hf_xet exists
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)  # behind huggingface_hub.upload_file, model_info...
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))  # never send a real token
    monkeypatch.setenv("HF_TOKEN", FakeHub.WRITE_TOKEN)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    hub_server.reset()
    yield hub_server
    assert hub_server.server_errors == []
