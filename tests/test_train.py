"""Training, resume, DDP, evaluation files and predict output, on tiny real data."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, TINY_TRAIN, stroke_lines
from safetensors.torch import load_file

from quickdraw_mobile import runfolder
from quickdraw_mobile.cli import main as qdm
from quickdraw_mobile.data.store import Store
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.inference import logits_for_pixels
from quickdraw_mobile.modelref import load_model
from quickdraw_mobile.train import load_config
from quickdraw_mobile.train.config import TrainConfig, from_dict
from quickdraw_mobile.train.distill import DistillConfig, soft_cross_entropy
from quickdraw_mobile.train.loop import train
from quickdraw_mobile.train.teachers import teacher_probs

CLASSES, TINY = TINY_CLASSES, TINY_TRAIN  # tiny_store and tiny_run (conftest) are these


def test_run_folder_holds_everything(tiny_run):
    for name in ("config.yaml", "model.safetensors", "labels.txt", "metrics.csv", "train_summary.json",
                 "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (tiny_run / name).is_file(), name
    assert any((tiny_run / "tensorboard").iterdir())
    assert (tiny_run / "labels.txt").read_text().split("\n")[:3] == CLASSES
    assert load_config(tiny_run / "config.yaml") == from_dict(TINY)
    rows = (tiny_run / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc") and len(rows) == 4
    summary = json.loads((tiny_run / "train_summary.json").read_text())
    assert summary["complete"] and summary["epochs_done"] == 3 and summary["classes"] == 3
    assert summary["train_samples"] + summary["val_samples"] + summary["test_samples"] == 3 * 300
    weights = load_file(tiny_run / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_training_learns(tiny_store, tmp_path):
    cfg = from_dict({**TINY, "epochs": 4})
    summary = train(cfg, tiny_store, tmp_path / "run", progress=False)
    assert summary["best_val_top1"] > 0.6  # 3 classes: chance is 0.33


def test_resume_is_bit_exact(tiny_store, tiny_run, tmp_path):
    out = tmp_path / "interrupted"
    first = train(from_dict(TINY), tiny_store, out, progress=False, stop_after_steps=5)  # mid-epoch 1
    assert not first["complete"] and not (out / "model.safetensors").exists()
    second = train(None, tiny_store, out, resume=True, progress=False, stop_after_steps=20)  # into epoch 2
    assert not second["complete"] and second["epochs_done"] == 1
    third = train(None, tiny_store, out, resume=True, progress=False)
    assert third["complete"]
    uninterrupted, resumed = load_file(tiny_run / "model.safetensors"), load_file(out / "model.safetensors")
    assert uninterrupted.keys() == resumed.keys()
    for key in uninterrupted:
        assert torch.equal(uninterrupted[key], resumed[key]), key
    assert (out / "metrics.csv").read_text() .split("\n")[1].split(",")[:5] == \
        (tiny_run / "metrics.csv").read_text().split("\n")[1].split(",")[:5]


@contextlib.contextmanager
def _saved_as_if_on_cuda():
    """torch.save tags every CPU storage with the location "cuda:0", as a file written on a GPU is tagged."""
    from torch import serialization

    def tag(storage):
        return "cuda:0" if storage.device.type == "cpu" else None

    serialization.register_package(-1, tag, lambda obj, location: None)
    try:
        yield
    finally:
        serialization._package_registry[:] = [e for e in serialization._package_registry if e[1] is not tag]


def test_a_gpu_checkpoint_resumes_on_the_cpu_bit_exactly(tiny_store, tiny_run, tmp_path):
    out = tmp_path / "from_gpu"
    train(from_dict({**TINY, "device": "auto"}), tiny_store, out, progress=False, stop_after_steps=5)
    last = out / "checkpoints" / "last.pt"
    state = runfolder.load_checkpoint(last)
    with _saved_as_if_on_cuda():
        runfolder.save_checkpoint(last, state)
    if not torch.cuda.is_available():  # the file really names a GPU: plain loading needs one
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(last, weights_only=True)
    loaded = runfolder.load_checkpoint(last)  # map_location="cpu"
    assert all(t.device.type == "cpu" for t in loaded["model"].values())
    assert qdm(["train", "--resume", str(out), "--data", str(tiny_store), "--device", "cpu"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["complete"] and summary["device"] == "cpu" and summary["autocast"] == "float32"
    reference, resumed = load_file(tiny_run / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_device_flag_errors_and_summary(tiny_store, tmp_path, capsys):
    absent = "mps" if not getattr(torch.backends, "mps", None) or not torch.backends.mps.is_available() else "cuda:99"
    assert qdm(["train", "--data", str(tiny_store), "--out", str(tmp_path / "r"), "--device", absent]) != 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: --device {absent}: no ") and "(available: cpu" in line, line
    assert not (tmp_path / "r" / "checkpoints").exists()
    summary = train(from_dict({**TINY, "epochs": 1, "device": "cpu"}), tiny_store, tmp_path / "cpu", progress=False)
    assert (summary["device"], summary["autocast"], summary["world_size"]) == ("cpu", "float32", 1)
    assert summary["device_name"].startswith("CPU") and summary["train_macs"] > 2 * summary["macs"]
    assert summary["mfu"] is None and summary["peak_source"] == "not measured"  # a tiny run: no peak measured
    assert summary["samples_per_s"] > 0


def test_mfu_is_macs_times_rate_over_the_peak():
    from quickdraw_mobile.train.loop import mfu

    assert mfu(1_000_000, 500.0, 100.0, 1) == pytest.approx(0.005)
    assert mfu(1_000_000, 500.0, 100.0, 2) == pytest.approx(0.0025)  # the peak of every process
    assert mfu(1_000_000, 500.0, None, 1) is None


def test_mixed_run_resumes_bit_exactly(tiny_store, tiny_run, tmp_path):
    cfg = from_dict({**TINY, "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_prob": 0.8})
    whole = train(cfg, tiny_store, tmp_path / "whole", progress=False)
    assert whole["complete"]
    out = tmp_path / "interrupted"
    train(cfg, tiny_store, out, progress=False, stop_after_steps=6)
    assert train(None, tiny_store, out, resume=True, progress=False)["complete"]
    reference, resumed = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    plain = load_file(tiny_run / "model.safetensors")  # the same TINY config, unmixed
    assert not all(torch.equal(reference[k], plain[k]) for k in reference)  # the loop really mixed


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_follows_the_weights_step_by_step_and_is_what_gets_saved(tiny_store, tmp_path, warmup):
    # One step per call (each a resume), so the raw weights after every step can be read from last.pt and the
    # average computed by hand: e_1 = w_1, e_t = d_t * e_(t-1) + (1 - d_t) * w_t, over parameters and BN
    # statistics, with d_t = 0.8, or with warm-up min(0.8, t / (9 + t)) (0.18, 0.25, ... up to 0.8 from t = 36).
    decay, out = 0.8, tmp_path / "run"
    cfg = from_dict({**TINY, "epochs": 1, "ema_decay": decay, "ema_warmup": warmup})
    done = train(cfg, tiny_store, out, progress=False, stop_after_steps=1)["complete"]
    expected, averaged = None, 0
    while True:
        state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
        if int(state["ema"]["n_averaged"]) > averaged:  # this call made a step (the last one may only validate)
            averaged += 1
            raw = {k: v.double() for k, v in state["model"].items() if v.is_floating_point()}
            d = min(decay, averaged / (9 + averaged)) if warmup else decay
            expected = raw if expected is None else {k: d * expected[k] + (1 - d) * raw[k] for k in raw}
        if done:
            break
        done = train(None, tiny_store, out, resume=True, progress=False, stop_after_steps=1)["complete"]
    assert averaged == int(state["ema"]["n_averaged"]) == 22  # 3 x 240 training rows / batch 32, the partial batch dropped
    saved = load_file(out / "model.safetensors")
    for key, value in expected.items():
        assert torch.allclose(state["ema"]["module." + key].double(), value, atol=1e-5), key
        assert torch.equal(saved[key], state["ema"]["module." + key]), key  # the average is what was saved
    assert not all(torch.equal(saved[k], state["model"][k]) for k in expected)  # and it is not the raw weights
    counters = [k for k, v in state["model"].items() if not v.is_floating_point()]  # BN's num_batches_tracked
    assert counters and all(int(saved[k]) == int(state["model"][k]) == 22 for k in counters)  # copied, not averaged


def test_existing_run_is_not_overwritten(tiny_store, tiny_run):
    before = (tiny_run / "model.safetensors").read_bytes()
    with pytest.raises(QDMError, match="already holds a run"):
        train(from_dict(TINY), tiny_store, tiny_run, progress=False)
    assert (tiny_run / "model.safetensors").read_bytes() == before


def test_bad_configs_and_data(tiny_store, tmp_path):
    with pytest.raises(QDMError, match="unknown model 'cnnn'"):
        train(from_dict({**TINY, "model": "cnnn"}), tiny_store, tmp_path / "a", progress=False)
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("epocs: 3\n")
    with pytest.raises(QDMError, match="unknown option.*epocs.*did you mean epochs"):
        load_config(cfg_file)
    with pytest.raises(QDMError, match="optimizer"):
        TrainConfig(optimizer="adam")
    with pytest.raises(QDMError, match=r"ema_decay: expected \[0, 1\)"):
        from_dict(dict(ema_decay=1.0))
    with pytest.raises(QDMError, match=r"stretch: expected a fraction in \[0, 1\)"):
        from_dict(dict(stretch=-0.1))
    empty = Store.create(tmp_path / "empty")
    with pytest.raises(QDMError, match="no classes"):
        train(from_dict(TINY), empty.root, tmp_path / "b", progress=False)
    with pytest.raises(QDMError, match="nothing to resume"):
        train(None, tiny_store, tmp_path / "c", resume=True, progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_store, tmp_path):
    out = tmp_path / "nan"
    train(from_dict({**TINY, "epochs": 3}), tiny_store, out, progress=False, stop_after_steps=30)  # epoch 2
    last = (out / "checkpoints" / "last.pt").read_bytes()
    # Poison the run's saved optimizer state? No: poison the weights of the next resume through a huge lr.
    cfg_text = (out / "config.yaml").read_text().replace("lr: 0.003", "lr: 1.0e+30").replace("grad_clip: 2.0",
                                                                                            "grad_clip: 0.0")
    (out / "config.yaml").write_text(cfg_text)
    with pytest.raises(QDMError, match="non-finite loss"):
        train(None, tiny_store, out, resume=True, progress=False)
    assert (out / "checkpoints" / "last.pt").read_bytes() == last


def test_corrupt_checkpoint_and_class_mismatch(tiny_store, tiny_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(QDMError, match="corrupt or unreadable checkpoint"):
        train(None, tiny_store, broken, resume=True, progress=False)
    other = Store.create(tmp_path / "other")
    other.add_class("cat", Store.open(tiny_store).array("cat")[:100], source="test")
    other.add_class("clock", Store.open(tiny_store).array("star")[:100], source="test")
    shutil.copy(tiny_run / "checkpoints" / "best.pt", broken / "checkpoints" / "last.pt")
    with pytest.raises(QDMError, match="classes differ"):
        train(None, other.root, broken, resume=True, progress=False)


def test_evaluate_and_predict_cli(tiny_store, tiny_run, tmp_path, capsys):
    assert qdm(["evaluate", "--model", str(tiny_run), "--data", str(tiny_store), "--out", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] == 3 * 30
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    assert len(list((tmp_path / "e").glob("*.png"))) >= 8
    pixels = Store.open(tiny_store).array("star")[:5]
    np.save(tmp_path / "x.npy", pixels.reshape(5, 28, 28))
    assert qdm(["predict", "--model", str(tiny_run), "--input", str(tmp_path / "x.npy"),
                "--out", str(tmp_path / "p.jsonl"), "--top-k", "2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        assert list(row) == ["top"] and len(row["top"]) == 2
        assert {p["class"] for p in row["top"]} <= set(CLASSES)
        assert row["top"][0]["prob"] >= row["top"][1]["prob"]
    np.save(tmp_path / "bad.npy", np.zeros((2, 785), dtype=np.uint8))
    assert qdm(["predict", "--model", str(tiny_run), "--input", str(tmp_path / "bad.npy"),
                "--out", str(tmp_path / "q.jsonl")]) == 2
    assert "expected shape (N, 784)" in capsys.readouterr().err
    assert not (tmp_path / "q.jsonl").exists()
    assert qdm(["evaluate", "--model", str(tmp_path / "nope"), "--data", str(tiny_store), "--out",
                str(tmp_path / "f")]) == 2
    # --device: the same answers on the CPU named explicitly; a device that is not there is a one-line error
    assert qdm(["predict", "--model", str(tiny_run), "--input", str(tmp_path / "x.npy"),
                "--out", str(tmp_path / "cpu.jsonl"), "--top-k", "2", "--device", "cpu"]) == 0
    assert (tmp_path / "cpu.jsonl").read_text() == (tmp_path / "p.jsonl").read_text()
    if not torch.cuda.is_available():
        capsys.readouterr()
        assert qdm(["evaluate", "--model", str(tiny_run), "--data", str(tiny_store), "--out", str(tmp_path / "g"),
                    "--device", "cuda"]) == 2
        assert capsys.readouterr().err.strip() == ("error: --device cuda: no CUDA device on this machine "
                                                   "(available: cpu)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp(tiny_store, tiny_run, tmp_path):
    # Distilling, so that the ranks also share the teachers' labelling (each labels half, an all-reduce joins them).
    out, config = tmp_path / "ddp", tmp_path / "ddp.yaml"
    config.write_text("eval_batch_size: 64\n")  # several labelling batches, so both ranks get some
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "quickdraw_mobile.cli", "train", "--data", str(tiny_store),
           "--out", str(out), "--model", "cnn_small", "--model-kwargs", '{"width": 8}', "--epochs", "2",
           "--batch-size", "16", "--max-per-class", "160", "--threads", "1", "--teacher", str(tiny_run),
           "--teacher-hflip", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["complete"]
    assert (summary["device"], summary["ddp_backend"]) == ("cpu", "gloo")  # auto on a CPU machine: gloo ranks
    assert (out / "model.safetensors").exists()
    cfg = load_config(out / "config.yaml")
    split = Store.open(tiny_store).splits(cfg.split_spec())["train"]
    assert cfg.eval_batch_size == 64 and len(split) > 2 * 64
    one_process = teacher_probs(cfg.distill, split, CLASSES, cfg.eval_batch_size, progress=False)
    np.testing.assert_array_equal(np.load(out / "teacher_probs.npy"), one_process.astype(np.float16))


@pytest.mark.parametrize("options", [
    {"optimizer": "lamb", "class_weights": True},
    {"optimizer": "sgd", "lr": 0.05, "balanced": True},
    {"bf16": True, "augment": False, "channels_last": False},
    {"ema_decay": 0.99},
])
def test_training_options_run(tiny_store, tmp_path, options):
    cfg = from_dict({**TINY, "epochs": 1, **options})
    summary = train(cfg, tiny_store, tmp_path / "run", progress=False)
    assert summary["complete"] and 0.0 <= summary["best_val_top1"] <= 1.0
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_lr_schedule_warms_up_then_decays():
    from quickdraw_mobile.train.loop import lr_at

    cfg = TrainConfig(lr=1.0, warmup_epochs=1, min_lr_ratio=0.01)
    lrs = [lr_at(cfg, step, total_steps=100, steps_per_epoch=10) for step in range(100)]
    assert lrs[0] == pytest.approx(0.01) and max(lrs) == pytest.approx(1.0, abs=1e-3)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11], strict=True))  # warm-up rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # cosine falls
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_predict_ndjson_keeps_input_order(tiny_run, tmp_path):
    lines = stroke_lines("cat", 3) + stroke_lines("star", 3)[::-1]
    (tmp_path / "d.ndjson").write_text("\n".join(lines) + "\n")
    assert qdm(["predict", "--model", str(tiny_run), "--input", str(tmp_path / "d.ndjson"),
                "--out", str(tmp_path / "p.jsonl"), "--top-k", "3"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    from quickdraw_mobile.data.render import render_many

    loaded = load_model(tiny_run)
    drawings = [json.loads(line)["drawing"] for line in lines]
    expected = logits_for_pixels(loaded.model, render_many(drawings)).argmax(1)
    assert [row["top"][0]["class"] for row in rows] == [loaded.labels[i] for i in expected]


# ---------------------------------------------------------------------------------------------- distillation
def test_soft_cross_entropy_is_tempered_kl_plus_the_teachers_entropy():
    torch.manual_seed(0)
    logits, teacher = torch.randn(5, 4), torch.softmax(torch.randn(5, 4), dim=1)
    kl = torch.nn.functional.kl_div(torch.log_softmax(logits / 2.0, dim=1), teacher, reduction="batchmean")
    entropy = -(teacher * teacher.log()).sum(1).mean()
    torch.testing.assert_close(soft_cross_entropy(logits, teacher, 2.0), 4.0 * (kl + entropy))


def test_teacher_probs_average_tempered_softmaxes_over_teachers_and_mirrors(tiny_store, tiny_run):
    split = Store.open(tiny_store).splits(from_dict(TINY).split_spec())["train"]
    pixels = split.gather(np.arange(len(split)))[0].reshape(-1, 28, 28)
    teacher = load_model(tiny_run).model
    tempered = [torch.softmax(torch.from_numpy(logits_for_pixels(teacher, view)) / 2.0, dim=1).numpy()
                for view in (pixels, np.ascontiguousarray(pixels[:, :, ::-1]))]
    single = teacher_probs(DistillConfig((str(tiny_run),), temperature=2.0), split, CLASSES, 64, progress=False)
    assert single.shape == (len(split), 3)
    np.testing.assert_allclose(single, tempered[0], atol=1e-5)
    twice = DistillConfig((str(tiny_run), str(tiny_run)), temperature=2.0, hflip=True)
    np.testing.assert_allclose(teacher_probs(twice, split, CLASSES, 64, progress=False),
                               (tempered[0] + tempered[1]) / 2, atol=1e-5)
    # Under DDP each rank labels every other batch: the ranks' tables sum to the one-process table, exactly.
    shards = [teacher_probs(twice, split, CLASSES, 64, progress=False, rank=rank, world_size=2) for rank in (0, 1)]
    assert all(0 < np.count_nonzero(shard.any(1)) < len(split) for shard in shards)
    np.testing.assert_array_equal(shards[0] + shards[1], teacher_probs(twice, split, CLASSES, 64, progress=False))


def test_distilled_run_keeps_its_soft_targets_and_resumes_bit_exactly(tiny_store, tiny_run, tmp_path):
    import shutil

    mixing = {"mixup_alpha": 0.2, "mix_prob": 0.5}
    cfg = from_dict({**TINY, **mixing, "teachers": [str(tiny_run)], "distill_weight": 0.7})
    whole = train(cfg, tiny_store, tmp_path / "whole", progress=False)
    table = np.load(tmp_path / "whole" / "teacher_probs.npy")
    assert table.shape == (whole["train_samples"], 3)
    np.testing.assert_allclose(table.astype(np.float32).sum(1), 1.0, atol=1e-2)
    out = tmp_path / "interrupted"
    train(cfg, tiny_store, out, progress=False, stop_after_steps=6)
    lost = tmp_path / "lost"
    shutil.copytree(out, lost)
    (lost / "teacher_probs.npy").unlink()
    with pytest.raises(QDMError, match="teacher_probs.npy: missing or unreadable"):
        train(None, tiny_store, lost, resume=True, progress=False)
    assert train(None, tiny_store, out, resume=True, progress=False)["complete"]
    reference, resumed = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    # The same run with other soft targets (the teacher also shown the mirrored drawings) ends elsewhere:
    # the loop really learns from the table.
    mirrored = from_dict({**cfg.to_dict(), "teacher_hflip": True})
    train(mirrored, tiny_store, tmp_path / "mirrored", progress=False)
    other = load_file(tmp_path / "mirrored" / "model.safetensors")
    assert not all(torch.equal(reference[k], other[k]) for k in reference)


def test_bad_teachers_stop_before_anything_is_written(tiny_store, tiny_run, tmp_path, capsys):
    two_classes = from_dict({**TINY, "classes": ["apple", "cat"], "teachers": [str(tiny_run)]})
    with pytest.raises(QDMError, match="labels.txt: the teacher's 3 classes differ from the data's 2 classes"):
        train(two_classes, tiny_store, tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    assert qdm(["train", "--data", str(tiny_store), "--model", "cnn_small", "--teacher", str(tmp_path / "nope"),
                "--out", str(tmp_path / "b")]) == 2
    assert "nope: no such run folder" in capsys.readouterr().err and not (tmp_path / "b").exists()
    with pytest.raises(QDMError, match=r"distill_weight: expected a share in \[0, 1\]"):
        from_dict(dict(teachers=["default"], distill_weight=1.5))
    with pytest.raises(QDMError, match="distill_temperature: expected a positive value"):
        from_dict(dict(distill_temperature=0))
    with pytest.raises(QDMError, match="teachers: expected a list"):
        from_dict(dict(teachers="default"))
    asked_to_stop = threading.Event()
    asked_to_stop.set()  # Ctrl-C while the teachers label the drawings
    split = Store.open(tiny_store).splits(from_dict(TINY).split_spec())["train"]
    with pytest.raises(QDMError, match="interrupted while the teachers labelled"):
        teacher_probs(DistillConfig((str(tiny_run),)), split, CLASSES, progress=False, stop=asked_to_stop)


# ---------------------------------------------------------------------------------------------- the config
def test_flat_and_nested_configs_are_one_config(tmp_path):
    from quickdraw_mobile.pipeline import CONFIGS

    flat = {"mixup_alpha": 0.2, "mix_prob": 0.5, "ema_decay": 0.9, "hflip": True, "scale_min": 0.8,
            "augment": False, "teachers": ["default"], "distill_weight": 0.3, "epochs": 3}
    nested = {"mix": {"mixup_alpha": 0.2, "prob": 0.5}, "ema": {"decay": 0.9}, "epochs": 3,
              "augment": {"hflip": True, "scale": [0.8, 1.1], "enabled": False},
              "distill": {"teachers": ["default"], "weight": 0.3}}
    cfg = from_dict(flat)
    assert cfg == from_dict(nested) and cfg.mix.prob == 0.5 and cfg.augment.scale == (0.8, 1.1)
    assert cfg.augmentation() is None and cfg.distill.teachers == ("default",)
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert load_config(tmp_path / "c.yaml") == cfg  # the nested form a run folder saves reads back
    assert cfg.updated(mixup_alpha=0.0).mix == type(cfg.mix)(prob=0.5)
    with pytest.raises(QDMError, match=r"unknown option\(s\) mix.alpha"):
        from_dict({"mix": {"alpha": 1.0}})
    # an existing run folder's flat config.yaml, and every shipped config, still load
    bundled = load_config(Path(__file__).parents[1] / "src/quickdraw_mobile/pretrained/default/config.yaml")
    assert bundled.mix.mixup_alpha == 0.2 and bundled.ema.decay == 0.999 and bundled.augment.hflip
    assert load_config(CONFIGS / "default_model.yaml") == bundled


def test_every_config_option_is_a_train_flag(capsys):
    from quickdraw_mobile.cli import build_parser
    from quickdraw_mobile.cli.train import _overrides
    from quickdraw_mobile.options import leaves

    argv = ["train", "--data", "d", "--out", "o", "--model-kwargs", '{"width": 8}', "--classes", "cat, dog",
            "--teacher", "a", "--teacher", "b", "--scale", "0.7", "1.2", "--no-augment", "--no-channels-last",
            "--mix-prob", "0.25", "--ema-warmup", "--teacher-hflip", "--distill-weight", "0.4", "--stretch", "0.1"]
    given = _overrides(build_parser().parse_args(argv))
    cfg = from_dict(given)
    assert cfg.model_kwargs == {"width": 8} and cfg.classes == ["cat", "dog"] and not cfg.channels_last
    assert cfg.distill.teachers == ("a", "b") and cfg.distill.hflip and cfg.distill.weight == 0.4
    assert cfg.augment.scale == (0.7, 1.2) and not cfg.augment.enabled and cfg.augment.stretch == 0.1
    assert cfg.mix.prob == 0.25 and cfg.ema.warmup
    with pytest.raises(SystemExit):
        qdm(["train", "--help"])
    help_text = capsys.readouterr().out
    for leaf in leaves(TrainConfig):  # every field settable, with its help
        assert f"--{leaf.flag}" in help_text and leaf.help, leaf.path
