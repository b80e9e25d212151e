"""The command line as a user meets it (issue 16): refusals instead of silent or destructive
successes, exit codes, --json everywhere, CLI-worded messages, progress and quiet modes, plain
piped output, branch / log / cache / refs commands, and packaging hygiene. Most tests run the
real command through Click's CliRunner; those about signals, terminals and the hub run
``python -m lamina`` in a subprocess."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import lamina
from lamina.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def run(*args: object, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def save(path: Path, scale: float = 1.0, **kwargs: object) -> Path:
    lamina.save({"enc.weight": np.full((4, 4), scale, "f4"), "enc.bias": np.zeros(4, "f4"),
                 "head.weight": np.arange(8, dtype="f4").reshape(2, 4) * scale}, path, **kwargs)
    return path


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    return save(tmp_path / "snap")


def one_error(res: Result, kind: str, *needles: str, code: int = 2) -> str:
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {kind}: "), res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def commands() -> list[list[str]]:
    out = []
    for name, command in cli.commands.items():
        sub = getattr(command, "commands", None)
        out += [[name, s] for s in sub] if sub else [[name]]
    return out


# ------------------------------------------------------------------ 1. no destructive or silent successes
def test_push_refuses_an_ordinary_non_empty_directory(snap: Path, tmp_path: Path) -> None:
    target = tmp_path / "some-dir"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    one_error(run("push", snap, target), "ExistsError", "not a lamina repository", "new or empty directory")
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert run("push", snap, tmp_path / "empty").exit_code == 0
    assert run("push", save(tmp_path / "v2", 2.0), tmp_path / "empty").exit_code == 0  # now a repository
    assert len(lamina.Repo(tmp_path / "empty").log()) == 2


def onnx_template(path: Path, names: list[str]) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [numpy_helper.from_array(np.ones((4, 4), "f4"), names[0])]
    nodes = [helper.make_node("MatMul", ["x", names[0]], ["y" if len(names) == 1 else "t"])]
    if len(names) > 1:
        inits.append(numpy_helper.from_array(np.ones(4, "f4"), names[1]))
        nodes.append(helper.make_node("Add", ["t", names[1]], ["y"]))
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits)), path)
    return path


def test_an_onnx_template_matching_nothing_is_refused_and_a_partial_match_warns(snap: Path, tmp_path: Path) -> None:
    nothing = onnx_template(tmp_path / "nothing.onnx", ["W"])
    one_error(run("convert", snap, tmp_path / "m.onnx", "--onnx-template", nothing), "FormatError",
              "none of its 1 initializers", "nothing was written")
    assert not (tmp_path / "m.onnx").exists()
    partial = onnx_template(tmp_path / "partial.onnx", ["W", "enc.bias"])
    res = run("convert", snap, tmp_path / "m.onnx", "--onnx-template", partial, "--json")
    assert res.exit_code == 0, res.stderr
    assert "warning: only 1 of 2 initializers" in res.stderr and "W" in res.stderr
    out = json.loads(res.stdout)
    assert out["destination"] == str(tmp_path / "m.onnx") and out["messages"][0].startswith("warning: only 1 of 2")
    assert any(m.startswith("replaced 1 initializers") for m in out["messages"])


def test_an_unknown_destination_extension_needs_to(snap: Path, tmp_path: Path) -> None:
    torch_file = tmp_path / "model.pt"
    assert run("convert", snap, torch_file).exit_code == 0
    one_error(run("convert", torch_file, tmp_path / "out.xyz"), "FormatError", "'.xyz'", "--to lamina")
    assert not (tmp_path / "out.xyz").exists()
    assert run("convert", torch_file, tmp_path / "out.xyz", "--to", "lamina").exit_code == 0
    assert lamina.open(tmp_path / "out.xyz").keys() == lamina.open(snap).keys()
    assert run("convert", torch_file, tmp_path / "Llama-3.2-1B").exit_code == 0  # a version, not an extension


def test_inspect_and_verify_say_what_a_file_is(snap: Path, tmp_path: Path) -> None:
    text = tmp_path / "afile"
    text.write_text("hello")
    shard = next((snap / "weights").iterdir())
    onnx_file = onnx_template(tmp_path / "g.onnx", ["W"])
    for command in ("inspect", "verify"):
        one_error(run(command, text), "FormatError", "is a file, not a lamina snapshot")
        line = one_error(run(command, shard), "FormatError", f"inside the snapshot {snap}", f"lamina inspect {snap}")
        assert "no such snapshot directory" not in line
        one_error(run(command, onnx_file), "FormatError", "is an ONNX model", "lamina convert")
    res = run("inspect", shard, "--tensors", "--json")
    assert res.exit_code == 0 and {r["name"] for r in json.loads(res.stdout)} <= set(lamina.open(snap).keys())


# ------------------------------------------------------------------ 2. exit codes
def test_every_help_documents_exit_codes_and_examples() -> None:
    top = run("--help")
    assert top.exit_code == 0 and "130" in top.stdout and "_LAMINA_COMPLETE=bash_source" in top.stdout
    assert "binary units" in top.stdout
    for path in commands():
        res = run(*path, "--help")
        assert res.exit_code == 0, path
        assert "Examples:" in res.stdout and " ".join(["lamina", *path]) in res.stdout.split("Examples:")[1], path
        codes = res.stdout.split("Exit codes:")[1]
        assert "0    success" in codes and "2    usage or input error" in codes and "130  interrupted" in codes, path
    assert "1    verification found bad files" in run("verify", "--help").stdout
    assert "1    the repository has problems" in run("fsck", "--help").stdout


def test_usage_errors_exit_2_and_found_problems_exit_1(snap: Path, tmp_path: Path) -> None:
    assert run("verify").exit_code == 2
    assert run("push", snap, tmp_path / "repo").exit_code == 0
    assert run("branch", tmp_path / "repo", "main").exit_code == 2  # neither --delete nor --rename
    other = save(tmp_path / "other", 3.0)
    assert run("diff", snap, other).exit_code == 0
    assert run("diff", snap, other, "--exit-code").exit_code == 1
    assert run("diff", snap, snap, "--exit-code").exit_code == 0
    shard = next((snap / "weights").iterdir())
    shard.write_bytes(shard.read_bytes()[:-1] + bytes([shard.read_bytes()[-1] ^ 1]))
    res = run("verify", snap, "--json")
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert report["ok"] is False and [p["path"] for p in report["problems"]] == [shard.relative_to(snap).as_posix()]


def test_ctrl_c_exits_130_with_one_line(tmp_path: Path) -> None:
    """A pull from a server that accepts the connection and never answers, interrupted by SIGINT."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(120)  # hang guard only
        port = server.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "lamina", "pull", f"http://127.0.0.1:{port}/repo",
                                 tmp_path / "dst"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        conn, _ = server.accept()  # the client is now waiting for an answer
        with conn:
            conn.recv(65536)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and err.strip().splitlines() == [err.strip().splitlines()[0]]
    assert err.startswith("error: interrupted") and "run the same pull again" in err
    assert not (tmp_path / "dst").exists()


def test_an_interrupted_push_says_how_to_resume_and_free(snap: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.repo.repository import Repo

    calls: list[str] = []
    original = Repo._put_blob

    def interrupted(self: Repo, path: str, *args: object) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(self, path, *args)

    monkeypatch.setattr(Repo, "_put_blob", interrupted)
    res = run("push", snap, tmp_path / "repo")
    line = res.stderr.strip()
    assert res.exit_code == 130 and line.startswith("error: interrupted")
    assert "run the same push again to resume" in line and f"lamina gc {tmp_path / 'repo'}" in line
    monkeypatch.undo()
    assert lamina.Repo(tmp_path / "repo").branches() == {}
    assert run("push", snap, tmp_path / "repo").exit_code == 0


# ------------------------------------------------------------------ 3. --json everywhere
def test_json_on_every_reporting_command(snap: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    pushed = json.loads(run("push", snap, repo, "-m", "one", "--tag", "v1", "--json").stdout)
    assert pushed["created"] is True and pushed["tag"] == "v1" and pushed["uploaded_files"] > 0
    head = pushed["revision"]
    assert lamina.Repo(repo).branches() == {"main": head}
    pulled = json.loads(run("pull", f"{repo}@v1", tmp_path / "pulled", "--json").stdout)
    assert pulled["files"] == len(lamina.open(snap).manifest.files) and pulled["layers"] == 2
    assert json.loads(run("tag", repo, "v2", "--json").stdout) == {"tag": "v2", "deleted": False, "revision": head}
    assert json.loads(run("refs", repo, "--json").stdout) == {"branches": {"main": head}, "tags": {"v1": head, "v2": head}}
    fsck = json.loads(run("fsck", repo, "--full", "--json").stdout)
    assert fsck["ok"] is True and fsck["problems"] == [] and fsck["full"] is True
    gc = json.loads(run("gc", repo, "--dry-run", "--json").stdout)
    assert gc == {"dry_run": True, "deleted_blobs": 0, "deleted_bytes": 0, "deleted_revisions": 0,
                  "kept_blobs": gc["kept_blobs"]} and gc["kept_blobs"] > 0
    verified = json.loads(run("verify", f"{repo}@v1", "--json").stdout)
    assert verified["ok"] is True and verified["problems"] == []
    converted = json.loads(run("convert", snap, tmp_path / "m.safetensors", "--json").stdout)
    assert converted["destination"] == str(tmp_path / "m.safetensors")
    log = json.loads(run("log", repo, "--json").stdout)
    assert [r["id"] for r in log] == [head] and log[0]["tags"] == ["v1", "v2"] and log[0]["branches"] == ["main"]


def test_errors_under_json_are_json(tmp_path: Path) -> None:
    for args in (["verify", tmp_path / "nope"], ["fsck", tmp_path / "nope"], ["log", tmp_path / "nope"],
                 ["inspect", tmp_path / "nope"]):
        res = run(*args, "--json")
        assert res.exit_code == 2
        error = json.loads(res.stdout)["error"]
        assert error["type"] == "NotFoundError" and error["exit_code"] == 2 and str(tmp_path) in error["message"]


# ------------------------------------------------------------------ 4. messages for CLI users
def test_messages_name_flags_not_python_arguments(snap: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run("push", snap, repo, "--tag", "v1").exit_code == 0
    assert run("push", save(tmp_path / "v2", 2.0), repo).exit_code == 0
    line = one_error(run("tag", repo, "v1", "main"), "ExistsError", "--force")
    assert "force=True" not in line
    assert run("convert", snap, tmp_path / "m.pt").exit_code == 0
    line = one_error(run("convert", snap, tmp_path / "m.pt"), "ExistsError", "--overwrite")
    assert "overwrite=True" not in line
    line = one_error(run("log", "hf://org/name"), "FormatError", "Hugging Face Hub", "lamina pull")
    assert "lamina.open" not in line
    one_error(run("refs", "hf://org/name"), "FormatError", "`lamina refs` works on lamina repositories")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hub_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_XET="1", **extra)
    return env


def test_an_unreachable_hub_is_one_storage_error_at_once_in_pull_and_inspect(tmp_path: Path) -> None:
    """No retry blocks: huggingface_hub's "Retrying in 1s" never shows, pull and inspect agree."""
    env = hub_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    for args in (["pull", "hf://org/name", tmp_path / "d"], ["inspect", "hf://org/name"],
                 ["convert", "hf://org/name", tmp_path / "c"]):
        res = subprocess.run([sys.executable, "-m", "lamina", *map(str, args)], capture_output=True, text=True,
                             env=env, timeout=120)
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and "Retrying" not in res.stderr, res.stderr
        assert res.stderr.startswith("error: StorageError: hf://org/name: cannot reach the hub"), res.stderr
    offline = hub_env(tmp_path, HF_HUB_OFFLINE="1")
    for args in (["pull", "hf://org/name", tmp_path / "d"], ["inspect", "hf://org/name"]):
        res = subprocess.run([sys.executable, "-m", "lamina", *map(str, args)], capture_output=True, text=True,
                             env=offline, timeout=120)
        assert res.returncode == 2 and res.stderr.startswith("error: NotFoundError: hf://org/name"), res.stderr
        assert "local_files_only" not in res.stderr and "HF_HUB_OFFLINE" in res.stderr


# ------------------------------------------------------------------ 5. progress and quiet
def run_on_terminal(*args: object) -> tuple[int, str, str]:
    """Run ``lamina`` with stderr on a pseudo-terminal (so progress bars draw); stdout piped."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "lamina", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=child, text=True, env={**os.environ, "COLUMNS": "120"})
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait(timeout=120)
    os.close(main)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_progress_bars_on_a_terminal_and_none_with_no_progress_or_quiet(tmp_path: Path) -> None:
    big = tmp_path / "big"
    lamina.save({f"l{i}.w": np.full((256, 256), i, "f4") for i in range(4)}, big)
    total = sum(f.size for f in lamina.open(big).manifest.files if f.role == "weights")
    code, out, err = run_on_terminal("verify", big)
    assert code == 0 and out.startswith(f"OK {big}") and "verifying" in err and "MiB" in err
    code, out, err = run_on_terminal("convert", big, tmp_path / "m.pt")
    assert code == 0 and "converting" in err and "/? bytes" not in err.rsplit("converting", 1)[1]  # known total
    assert f"/{total / 2**20:.1f} MiB" in err  # the bar knows the total (binary units)
    code, out, err = run_on_terminal("verify", big, "--no-progress")
    assert code == 0 and "verifying" not in err
    code, out, err = run_on_terminal("verify", big, "--quiet")
    assert code == 0 and out == "" and err == ""
    assert run("push", big, tmp_path / "repo").exit_code == 0
    code, out, err = run_on_terminal("fsck", tmp_path / "repo", "--full")
    assert code == 0 and "hashing" in err and out.startswith("OK ")


def test_quiet_prints_nothing_on_success(snap: Path, tmp_path: Path) -> None:
    for args in (["push", snap, tmp_path / "repo", "-q"], ["pull", tmp_path / "repo", tmp_path / "p", "-q"],
                 ["tag", tmp_path / "repo", "v1", "-q"], ["gc", tmp_path / "repo", "-q"],
                 ["fsck", tmp_path / "repo", "-q"], ["convert", snap, tmp_path / "m.pt", "-q"]):
        res = run(*args)
        assert res.exit_code == 0 and res.stdout == "" and res.stderr == "", args


# ------------------------------------------------------------------ 6. output
def test_piped_inspect_is_plain_rounded_and_shows_only_non_default_hyperparameters(tmp_path: Path) -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    lamina.save(model, tmp_path / "s", optimizer=opt, training={"step": 5, "metrics": {"loss": 2 / 3}})
    res = subprocess.run([sys.executable, "-m", "lamina", "inspect", tmp_path / "s"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "40"})
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert not any(ch in out for ch in "┌┏│━─"), out
    assert "{" not in out and "'" not in out and "Info" not in out  # no reprs, no empty table
    assert "metric loss: 0.666667" in out and "group 0: 4 params, lr=0.0003" in out
    assert "betas" not in out and "foreach" not in out
    full = run("inspect", tmp_path / "s", "--all").stdout
    assert "betas=(0.9, 0.999)" in full and "weight_decay=0.01" in full
    for line in out.splitlines():  # piped: never wrapped mid-phrase
        assert not line.startswith(" " * 4), line


def test_diff_summary_counts_its_rows_and_units_are_binary(snap: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    lamina.save({"enc.weight": np.full((4, 4), 1.0, "f4"), "enc.bias": np.zeros(4, "f4"),
                 "head.weight": np.ones((2, 4), "f4") * 5, "new.weight": np.ones((300, 4), "f4")}, other,
                files={"config.json": {"a": 1}})
    res = run("diff", snap, other)
    assert res.exit_code == 0
    rows = [line.split("\t") for line in res.stdout.splitlines() if "\t" in line]
    statuses = [r[1] for r in rows if r[1] in ("added", "removed", "changed", "unchanged") and r[0] != "path"]
    layer_rows = [r for r in rows if len(r) == 4 and r[0] != "layer"]
    summary = res.stdout.strip().splitlines()[-1]
    assert f"layers: {sum(r[1] == 'added' for r in layer_rows)} added" in summary
    assert f"{sum(r[1] == 'changed' for r in layer_rows)} changed" in summary
    assert "other files: 1 added" in summary and statuses.count("added") == 2
    assert "KiB" in res.stdout and "kB" not in res.stdout and "MB" not in res.stdout


# ------------------------------------------------------------------ 8. commands users reach for
def test_delete_and_rename_branches(snap: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run("push", snap, repo).exit_code == 0
    assert run("push", save(tmp_path / "v2", 2.0), repo, "--branch", "dev").exit_code == 0
    dev = lamina.Repo(repo).branches()["dev"]
    res = run("branch", repo, "dev", "--rename", "next")
    assert res.exit_code == 0 and "renamed branch dev -> next" in res.stdout
    assert lamina.Repo(repo).branches() == {"main": lamina.Repo(repo).branches()["main"], "next": dev}
    one_error(run("branch", repo, "next", "--rename", "main"), "ExistsError", "'main' exists")
    one_error(run("branch", repo, "gone", "--delete"), "NotFoundError", "'gone'")
    res = run("branch", repo, "next", "--delete", "--json")
    assert json.loads(res.stdout) == {"branch": "next", "deleted": True, "revision": dev}
    assert set(lamina.Repo(repo).branches()) == {"main"}
    assert json.loads(run("gc", repo, "--json").stdout)["deleted_revisions"] == 1


def test_log_shows_the_tags_at_each_revision(snap: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run("push", snap, repo, "-m", "one", "--tag", "v1.0").exit_code == 0
    assert run("push", save(tmp_path / "v2", 2.0), repo, "-m", "two", "--tag", "v2.0").exit_code == 0
    assert run("tag", repo, "stable", "v1.0").exit_code == 0
    lines = run("log", repo).stdout.splitlines()
    assert "(branch: main, tag: v2.0)" in lines[0] and lines[0].endswith("two")
    assert "(tag: stable, tag: v1.0)" in lines[1] and lines[1].endswith("one")


def test_refs_on_an_empty_repository_says_so(snap: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run("push", snap, repo).exit_code == 0
    assert run("branch", repo, "main", "--delete", "-q").exit_code == 0
    res = run("refs", repo)
    assert res.exit_code == 0 and "no branches or tags (an empty repository" in res.stdout


def test_cache_ls_and_prune(snap: Path, tmp_path: Path) -> None:
    from servers import RangeHTTPServer

    cache = tmp_path / "cache"
    env = {"LAMINA_CACHE": str(cache)}
    assert "(empty)" in run("cache", "ls", env=env).stdout
    with RangeHTTPServer(snap) as server:
        lamina.open(server.url, cache=cache).state_dict(framework="np")  # reads through the cache
    listed = json.loads(run("cache", "ls", "--json", env=env).stdout)
    weights = [f for f in lamina.open(snap).manifest.files if f.role == "weights"]
    assert listed["root"] == str(cache) and listed["files"] == len(weights)
    assert listed["total_bytes"] == sum(f.size for f in weights)
    assert sorted(e["digest"] for e in listed["entries"]) == sorted(f.digest[1] for f in weights)
    assert run("cache", "prune", env=env).exit_code == 2  # says which selector to give
    dry = json.loads(run("cache", "prune", "--all", "--dry-run", "--json", env=env).stdout)
    assert dry["deleted_files"] == len(weights) and json.loads(run("cache", "ls", "--json", env=env).stdout)["files"]
    res = run("cache", "prune", "--max-size", "0", env=env)
    assert res.exit_code == 0 and f"deleted {len(weights)} file(s)" in res.stdout
    assert json.loads(run("cache", "ls", "--json", env=env).stdout)["files"] == 0


def test_shell_completion_script() -> None:
    res = subprocess.run([sys.executable, "-m", "lamina"],
                         capture_output=True, text=True, env={**os.environ, "_LAMINA_COMPLETE": "bash_source"})
    assert res.returncode == 0 and "_lamina_completion" in res.stdout and "complete " in res.stdout


# ------------------------------------------------------------------ 9. repeated pushes
def test_pushing_an_unchanged_snapshot_with_a_message_makes_no_revision(snap: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = json.loads(run("push", snap, repo, "-m", "first", "--json").stdout)
    res = run("push", snap, repo, "-m", "again")
    assert res.exit_code == 0 and "already the head, no new revision" in res.stdout
    assert [r.message for r in lamina.Repo(repo).log()] == ["first"]
    again = json.loads(run("push", snap, repo, "-m", "forced", "--allow-empty", "--json").stdout)
    assert again["created"] is True and again["parent"] == first["revision"]
    assert [r.message for r in lamina.Repo(repo).log()] == ["forced", "first"]


# ------------------------------------------------------------------ 10. packaging hygiene
def test_pyproject_has_an_spdx_license_and_no_setuptools_deprecation() -> None:
    import warnings

    import tomllib
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["license"] == "Apache-2.0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "Apache-2.0"


def test_demo_training_loop_raises_no_requires_grad_warning() -> None:
    import warnings

    import torch

    sys.path.insert(0, str(ROOT / "docs" / "examples"))
    try:
        import demo
    finally:
        sys.path.pop(0)
    model = demo.TinyLM()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        demo.train(model, torch.optim.SGD(model.parameters(), lr=1e-2), steps=1, seed=0)
