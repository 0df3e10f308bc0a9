"""The run folder as a type: its files' names, its one-line errors, and the layering that keeps imports acyclic."""

from __future__ import annotations

import subprocess
import sys

import pytest

from quickdraw_mobile import runfolder
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.modelref import load_model, resolve_run
from quickdraw_mobile.runfolder import RunFolder


def test_paths_are_the_run_folder_format(tmp_path):
    run = RunFolder(str(tmp_path))
    assert run.root == tmp_path
    assert [p.relative_to(tmp_path).as_posix() for p in (
        run.config_path, run.weights_path, run.labels_path, run.metrics_path, run.summary_path,
        run.last_checkpoint, run.best_checkpoint)] == [
        "config.yaml", "model.safetensors", "labels.txt", "metrics.csv", "train_summary.json",
        "checkpoints/last.pt", "checkpoints/best.pt"]


def test_an_incomplete_run_folder_is_one_error_line_naming_the_missing_file(tmp_path):
    with pytest.raises(QDMError, match="no such run folder"):
        RunFolder(tmp_path / "absent").check()
    (tmp_path / runfolder.CONFIG).write_text("model: cnn\n")
    runfolder.write_labels(tmp_path / runfolder.LABELS, ["apple", "cat"])
    with pytest.raises(QDMError) as caught:
        load_model(tmp_path)
    assert str(caught.value) == f"{tmp_path / runfolder.WEIGHTS}: missing; {tmp_path} is not a complete run folder"


def test_the_bundled_default_model_resolves_to_a_complete_run_folder():
    run = resolve_run("default")
    assert run.check() == run and run.read_labels()


@pytest.mark.parametrize("first", ["quickdraw_mobile.modelref", "quickdraw_mobile.train.teachers",
                                   "quickdraw_mobile.train.config"])
def test_run_folder_modelref_and_train_import_in_any_order(first):
    """modelref builds on train.config and train's teachers on modelref: whichever is imported first, no module
    meets another half-initialized (the cycle that function-local imports used to hide)."""
    code = f"import {first}, quickdraw_mobile.train.loop, quickdraw_mobile.modelref, quickdraw_mobile.pipeline"
    subprocess.run([sys.executable, "-c", code], check=True)
