"""`qdm run` end to end on a tiny config: every section and artifact, then the stage cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from quickdraw_mobile.cli import main as qdm
from quickdraw_mobile.data.store import Store
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.pipeline import load_pipeline_config, run


@pytest.fixture
def tiny_config(tmp_path, shared_data):
    store = Store.create(tmp_path / "store")
    for name in ("apple", "cat", "star"):
        store.add_class(name, np.load(shared_data / "numpy_bitmap" / f"{name}.npy", mmap_mode="r")[:150], "t")
    config = {"data": {"source": str(store.root)},
              "train": {"model": "cnn_small", "model_kwargs": {"width": 8}, "epochs": 2, "batch_size": 32,
                        "threads": 1},
              "evaluate": {"split": "test"}, "report": {}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_end_to_end_and_cache(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert qdm(["run", "--config", str(tiny_config), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for section in ("## Data", "## Training", "## Evaluation"):
        assert section in report
    for artifact in ("train/model.safetensors", "train/config.yaml", "eval/metrics.json",
                     "eval/training_curves.png", "eval/per_class_accuracy.png", "report.json", "pipeline.json"):
        assert (out / artifact).is_file(), artifact
    data = json.loads((out / "report.json").read_text())
    assert data["evaluate"]["n"] == 3 * 15 and data["data"]["classes"] == ["apple", "cat", "star"]
    assert f"{100 * data['evaluate']['top1']:.2f}%" in report

    capsys.readouterr()
    run(tiny_config, out)  # nothing changed: every stage is cached
    printed = capsys.readouterr().out
    assert printed.count("cached") == 4

    config = yaml.safe_load(tiny_config.read_text())
    config["evaluate"]["split"] = "val"  # only evaluate (and the report) must run again
    tiny_config.write_text(yaml.safe_dump(config))
    weights = (out / "train" / "model.safetensors").stat().st_mtime_ns
    run(tiny_config, out)
    printed = capsys.readouterr().out
    assert "[data] cached" in printed and "[train] cached" in printed and "[evaluate] running" in printed
    assert (out / "train" / "model.safetensors").stat().st_mtime_ns == weights
    assert json.loads((out / "report.json").read_text())["evaluate"]["split"] == "val"


def test_bad_pipeline_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trian: {}\n")
    with pytest.raises(QDMError, match="unknown section"):
        load_pipeline_config(path)
    path.write_text("train: {epocs: 2}\n")
    with pytest.raises(QDMError, match="unknown option"):
        run(path, tmp_path / "out", progress=False)
