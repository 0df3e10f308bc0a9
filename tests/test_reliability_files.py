"""Files on a hostile disk (issue 26): unwritable outputs, a full disk mid-run, kills, leftovers, strict JSON.

Tests run as root, for whom a chmod'ed folder is writable, so "read-only" is simulated in-process: the system
calls that create files and folders below one folder fail with EROFS, as on a read-only mount.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import re
import shlex
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN, stroke_lines
from safetensors.torch import load_file

from quickdraw_mobile import fileio
from quickdraw_mobile import runfolder as ckpt
from quickdraw_mobile.cli import main as qdm
from quickdraw_mobile.data.store import Store
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.train import loop
from quickdraw_mobile.train.config import TrainConfig
from quickdraw_mobile.train.loop import train

TMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
UMASK = os.umask(0)
os.umask(UMASK)
PLAIN_MODE = 0o666 & ~UMASK  # what open() gives a new file


def _train_argv(store: Path, out: Path) -> list[str]:
    """``qdm train`` with the options of TINY_TRAIN, so the run must end with the weights of ``tiny_run``."""
    options = {k: v for k, v in TINY_TRAIN.items() if k not in ("model_kwargs",)}
    argv = ["train", "--data", str(store), "--out", str(out), "--model-kwargs", json.dumps(TINY_TRAIN["model_kwargs"])]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def _same_weights(run: Path, reference: Path) -> bool:
    a, b = load_file(run / "model.safetensors"), load_file(reference / "model.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _metrics(run: Path) -> list[list[str]]:
    """metrics.csv without its header and the (timing) samples_per_s column."""
    lines = (run / "metrics.csv").read_text().strip().splitlines()
    assert lines[0].split(",")[-1] == "samples_per_s"
    return [line.split(",")[:-1] for line in lines[1:]]


def _temporaries(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if TMP_NAME.fullmatch(p.name)]


def _error_line(capsys) -> str:
    """The one line a failed command printed to stderr (after any progress bars)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err[-2000:]
    assert sum(line.startswith("error: ") for line in lines) == 1
    return lines[-1]


# ---------------------------------------------------------------------------------- unwritable --out
@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A folder that behaves like a read-only mount (holding an empty folder ``out``): creating a file or folder
    below it fails with EROFS."""
    root = tmp_path / "ro"
    (root / "out").mkdir(parents=True)
    below = str(root) + os.sep

    def refuse(path) -> None:
        if os.fspath(path).startswith(below) or os.fspath(path) == str(root):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, str | os.PathLike) and any(c in mode for c in "wax+"):
            refuse(os.path.abspath(file))
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(os.path.abspath(path))
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if not os.path.exists(path):
            refuse(os.path.abspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return root


def _verb(name: str, store: Path, run: Path, inputs: Path, out: Path) -> list[str]:
    argv = {
        "evaluate": ["evaluate", "--model", str(run), "--data", str(store), "--out", str(out), "--no-plots"],
        "export": ["export", "--model", str(run), "--format", "onnx", "--data", str(store), "--calib", "64",
                   "--out", str(out / "m.onnx")],
        "train": [*_train_argv(store, out)[:-2], "--epochs", "1"],
        "predict": ["predict", "--model", str(run), "--input", str(inputs / "x.npy"), "--out", str(out / "p.jsonl")],
        "data render": ["data", "render", str(inputs / "d.ndjson"), "--out", str(out / "r.npy")],
        "data view": ["data", "view", str(store), "--n", "2", "--out", str(out / "v.png")],
        "data download": ["data", "download", "--classes", "cat", "--per-class", "5", "--workers", "1",
                          "--base-url", "http://127.0.0.1:9/", "--out", str(out)],
        "data ingest": ["data", "ingest", str(inputs / "cat.ndjson"), "--out", str(out)],
    }[name]
    return argv


@pytest.fixture(scope="module")
def verb_inputs(tiny_store, tmp_path_factory) -> Path:
    inputs = tmp_path_factory.mktemp("inputs")
    np.save(inputs / "x.npy", Store.open(tiny_store).array("cat")[:4])
    lines = stroke_lines("cat", 4)
    for name in ("d.ndjson", "cat.ndjson"):
        (inputs / name).write_text("\n".join(lines) + "\n")
    return inputs


VERBS = ["evaluate", "export", "train", "predict", "data render", "data view", "data download", "data ingest"]


@pytest.mark.parametrize("where", ["below a regular file", "read-only folder", "missing parent on a read-only disk"])
@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_reports_an_unwritable_out_in_one_line(verb, where, tiny_store, tiny_run, verb_inputs,
                                                         tmp_path, request, capsys):
    """An --out that cannot be written gives one 'error:' line naming the path and the reason, exit 2."""
    if where == "below a regular file":
        (tmp_path / "file").write_text("x")
        out, reasons = tmp_path / "file" / "out", (f"{tmp_path / 'file'} is a file, not a folder", "Not a directory")
    else:
        root = request.getfixturevalue("read_only")
        out = root / "out" if where == "read-only folder" else root / "missing" / "out"
        reasons = ("Read-only file system",)
    assert qdm(_verb(verb, tiny_store, tiny_run, verb_inputs, out)) == 2
    line = _error_line(capsys)
    assert any(reason in line for reason in reasons) and str(out.parent) in line, line


def test_atomic_writes_leave_nothing_and_give_files_the_usual_mode(tmp_path):
    """A failed atomic write leaves neither the file nor a temporary; a written one has the umask mode, even
    when the writer replaced the temporary (as safetensors does)."""
    target = tmp_path / "a" / "f.bin"
    with pytest.raises(QDMError, match=r"f\.bin: could not write \(No space left on device\)"), \
            fileio.atomic_path(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list((tmp_path / "a").iterdir()) == []
    with fileio.atomic_path(target) as tmp:
        replacement = tmp.with_name("other")
        replacement.write_bytes(b"x")
        os.chmod(replacement, 0o600)
        os.replace(replacement, tmp)
    assert target.stat().st_mode & 0o777 == PLAIN_MODE


# ---------------------------------------------------------------------------------------------- strict JSON
def test_json_files_never_hold_nan_or_infinity(tmp_path, tiny_run):
    """write_json_atomic refuses NaN / Infinity with an error naming the file and the field, and writes nothing."""
    path = tmp_path / "m.json"
    with pytest.raises(QDMError, match=r"m\.json: per_class\[1\]\.f1 is nan, expected a finite number"):
        fileio.write_json_atomic(path, {"top1": 0.5, "per_class": [{"f1": 1.0}, {"f1": float("nan")}]})
    assert not path.exists()
    with pytest.raises(QDMError, match=r"m\.json: lr is -inf"):
        fileio.write_json_atomic(path, {"lr": -float("inf")})
    fileio.write_json_atomic(path, {"ok": [1.0, 2]})

    def no_constants(token):
        raise AssertionError(f"invalid JSON token {token}")

    for written in [path, *tiny_run.rglob("*.json")]:
        json.loads(written.read_text(), parse_constant=no_constants)


# ---------------------------------------------------------------------------------------- full disk
def _failing_torch_save(monkeypatch, nth: int, error: BaseException) -> None:
    """torch.save that writes part of the file and then fails at its ``nth`` call (a disk filling up)."""
    real, calls = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            Path(f).write_bytes(b"PK\x03\x04 partial")
            raise error
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
UNEXPECTED_POS = RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1152 vs 1046")


@pytest.mark.parametrize(("nth", "error"), [(3, UNEXPECTED_POS), (4, ENOSPC)], ids=["torch-unexpected-pos", "ENOSPC"])
def test_full_disk_keeps_the_last_good_checkpoint_and_the_hint_resumes(nth, error, tiny_store, tiny_run, tmp_path,
                                                                       monkeypatch, capsys):
    """A checkpoint write that fails mid-run says so in one line, keeps last.pt whole and no temporary, and the
    command it prints continues the run to the weights of an uninterrupted one, one metrics row per epoch."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _failing_torch_save(patch, nth, error)
        assert qdm(_train_argv(tiny_store, out)) == 2
    line = _error_line(capsys)
    reason = "unexpected pos 1152 vs 1046" if isinstance(error, RuntimeError) else "No space left on device"
    assert "checkpoints" in line and "could not write" in line and reason in line, line
    assert f"{out / 'checkpoints' / 'last.pt'} keeps the last good state" in line, line
    assert not _temporaries(out)
    ckpt.load_checkpoint(out / "checkpoints" / "last.pt")  # whole
    command = shlex.split(line.split("continue with: ")[1])
    assert command[:2] == ["qdm", "train"]
    assert qdm(command[1:]) == 0
    assert _same_weights(out, tiny_run)
    assert _metrics(out) == _metrics(tiny_run)


def test_full_disk_at_the_first_checkpoint_leaves_a_folder_a_new_run_reuses(tiny_store, tiny_run, tmp_path,
                                                                           monkeypatch, capsys):
    """Out of space before anything was checkpointed: --resume explains how to start again, and that command
    (or the same --out) trains into the folder."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _failing_torch_save(patch, 1, ENOSPC)
        assert qdm(_train_argv(tiny_store, out)) == 2
    line = _error_line(capsys)
    assert "No space left on device" in line and "nothing was checkpointed" in line, line
    assert qdm(["train", "--resume", str(out), "--data", str(tiny_store)]) == 2
    line = _error_line(capsys)
    assert "nothing to resume (stopped before its first checkpoint)" in line, line
    command = shlex.split(line.split("start it again with: ")[1])
    assert qdm(command[1:]) == 0
    assert _same_weights(out, tiny_run)


# ------------------------------------------------------------------------------------------- resume
def test_the_ctrl_c_hint_is_a_command_that_resumes_the_run(tiny_store, tiny_run, tmp_path, monkeypatch, capsys):
    """After Ctrl-C, the printed 'continue with:' command works as printed and ends where an uninterrupted run
    does."""
    out = tmp_path / "run"

    @contextlib.contextmanager
    def ctrl_c_pressed():
        flag = threading.Event()
        flag.set()
        yield flag

    with monkeypatch.context() as patch:
        patch.setattr(loop, "_interrupt_at_step_boundary", ctrl_c_pressed)
        assert qdm(_train_argv(tiny_store, out)) == 0
    hint = re.search(r"continue with: (.+)", capsys.readouterr().out).group(1)
    command = shlex.split(hint)
    assert command[:2] == ["qdm", "train"] and "--data" in command
    assert qdm(command[1:]) == 0
    assert _same_weights(out, tiny_run)
    from quickdraw_mobile.data.embedded import cache_dir

    assert loop.resume_command(Path("r un"), cache_dir() / "embedded-1-abc") == \
        "qdm train --resume 'r un' --data embedded"


def test_resume_refuses_options_it_would_ignore(tiny_store, tiny_run, tmp_path, capsys):
    """--resume with other options than --epochs is an error naming them, and changes nothing."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    assert qdm(["train", "--resume", str(run), "--data", str(tiny_store), "--lr", "5", "--bf16",
                "--out", str(tmp_path / "x")]) == 2
    line = _error_line(capsys)
    assert line.startswith("error: --lr, --bf16, --out: not allowed with --resume"), line
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_with_epochs_changes_the_runs_length(tiny_store, tiny_run, tmp_path, capsys):
    """--resume RUN --epochs N continues a finished run to N epochs (and says so); fewer than done is refused."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert qdm(["train", "--resume", str(run), "--data", str(tiny_store), "--epochs", "2"]) == 2
    assert "--epochs: the run in" in _error_line(capsys)
    assert qdm(["train", "--resume", str(run), "--data", str(tiny_store), "--epochs", "4"]) == 0
    assert "epochs 3 -> 4" in capsys.readouterr().out
    assert [row[0] for row in _metrics(run)] == ["1", "2", "3", "4"]
    assert _metrics(run)[:3] == _metrics(tiny_run)
    assert "epochs: 4" in (run / "config.yaml").read_text().splitlines()
    assert json.loads((run / "train_summary.json").read_text())["epochs_done"] == 4


# --------------------------------------------------------------------------------------- kills
class Killed(BaseException):
    """A SIGKILL stand-in: nothing in the package catches it, no cleanup code runs."""


def _kill_before(monkeypatch, file: str, epoch: int) -> None:
    """Kill the run just before it writes ``file`` (last.pt, metrics.csv) at the end of ``epoch``."""
    real_save, real_metrics = ckpt.save_checkpoint, ckpt.write_metrics_csv

    def save_checkpoint(path, state):
        if path.name == file and state["epoch"] == epoch and state["batch_in_epoch"] == 0:
            raise Killed
        return real_save(path, state)

    def write_metrics_csv(path, rows):
        if path.name == file and len(rows) == epoch:
            raise Killed
        return real_metrics(path, rows)

    monkeypatch.setattr(ckpt, "save_checkpoint", save_checkpoint)
    monkeypatch.setattr(ckpt, "write_metrics_csv", write_metrics_csv)


@pytest.mark.parametrize("file", ["last.pt", "metrics.csv"])
def test_metrics_csv_has_one_row_per_epoch_after_a_kill_and_resume(file, tiny_store, tiny_run, tmp_path,
                                                                   monkeypatch):
    """A kill at any of the epoch-end writes, then --resume: exactly one metrics row per epoch, the rows and
    weights of an uninterrupted run."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _kill_before(patch, file, epoch=2)
        with pytest.raises(Killed):
            train(TrainConfig(**TINY_TRAIN), tiny_store, out, progress=False)
    assert train(None, tiny_store, out, resume=True, progress=False)["complete"]
    assert _metrics(out) == _metrics(tiny_run)
    assert _same_weights(out, tiny_run)


def test_a_run_killed_before_its_first_epoch_ends_can_be_resumed(tiny_store, tiny_run, tmp_path, monkeypatch):
    """Killed before the first epoch's checkpoint, the folder is resumable (to the uninterrupted weights)."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _kill_before(patch, "last.pt", epoch=1)
        with pytest.raises(Killed):
            train(TrainConfig(**TINY_TRAIN), tiny_store, out, progress=False)
    assert train(None, tiny_store, out, resume=True, progress=False)["complete"]
    assert _same_weights(out, tiny_run) and len(_metrics(out)) == 3


def test_a_folder_without_any_checkpoint_is_reused_by_a_new_run(tiny_store, tmp_path):
    """What a start killed before its first checkpoint leaves (config, labels, stale rows, a temporary) does not
    block a new run into the same --out, and none of it survives."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.yaml").write_text(TrainConfig(**TINY_TRAIN).to_yaml())
    (out / "labels.txt").write_text("apple\ncat\nstar\n")
    (out / "metrics.csv").write_text("epoch,val_acc\n1,0.5\n1,0.5\n")
    (out / "checkpoints" / ".last.pt.abcd_123.tmp").write_bytes(b"")
    with pytest.raises(QDMError, match="nothing to resume"):
        train(None, tiny_store, out, resume=True, progress=False)
    cfg = TrainConfig(**{**TINY_TRAIN, "epochs": 1})
    assert train(cfg, tiny_store, out, progress=False)["complete"]
    assert len(_metrics(out)) == 1 and not _temporaries(out)


# ------------------------------------------------------------------------------------------- leftovers
def test_stale_temporaries_are_removed_when_a_run_resumes(tiny_store, tiny_run, tmp_path):
    """Zero-byte temporaries of killed writes (.best.pt.*.tmp, .model.safetensors.*.tmp) go when the run
    resumes; other files stay."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    stale = [run / "checkpoints" / ".best.pt.k2j4_9xq.tmp", run / ".model.safetensors.a1b2c3d4.tmp"]
    kept = [run / "notes.tmp", run / ".hidden", run / "checkpoints" / "mine.pt"]
    for path in stale + kept:
        path.write_bytes(b"")
    assert train(None, tiny_store, run, resume=True, progress=False)["complete"]
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_run_files_have_the_usual_file_mode(tiny_run):
    """Every file of a run folder, model.safetensors included, gets the mode of a plain open() (umask-based)."""
    modes = {p.relative_to(tiny_run).as_posix(): p.stat().st_mode & 0o777
             for p in tiny_run.rglob("*") if p.is_file()}
    assert "model.safetensors" in modes
    assert {name: mode for name, mode in modes.items() if mode != PLAIN_MODE} == {}


def test_a_folder_of_the_old_layout_resumes_with_one_row_per_epoch(tiny_store, tiny_run, tmp_path, monkeypatch):
    """A folder written before the fix (no last.pt after a failed write, checkpoints without metrics rows,
    metrics.csv a row ahead and repeated) resumes from best.pt to the rows and weights of an uninterrupted run."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _kill_before(patch, "last.pt", epoch=2)
        with pytest.raises(Killed):
            train(TrainConfig(**TINY_TRAIN), tiny_store, out, progress=False)
    (out / "checkpoints" / "last.pt").unlink()
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    del best["history"]
    torch.save(best, out / "checkpoints" / "best.pt")
    lines = (tiny_run / "metrics.csv").read_text().splitlines()
    (out / "metrics.csv").write_text("\n".join([lines[0], lines[1], lines[1], lines[2]]) + "\n")
    assert train(None, tiny_store, out, resume=True, progress=False)["complete"]
    assert _metrics(out) == _metrics(tiny_run)
    assert _same_weights(out, tiny_run)
