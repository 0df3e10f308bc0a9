"""`qdm run` end to end on a tiny config: every section and artifact, then the stage cache; the shipped configs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import make_store

from quickdraw_mobile.bench.native import find_native
from quickdraw_mobile.cli import main as qdm
from quickdraw_mobile.data.store import SplitSpec, split_class_rows
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.pipeline import CONFIGS, SECTIONS, load_pipeline_config, run
from quickdraw_mobile.pipeline import STAGES as PIPELINE_STAGES
from quickdraw_mobile.quant import list_methods
from quickdraw_mobile.train.config import TrainConfig, from_dict

REPO = Path(__file__).resolve().parents[1]
STAGES = ("data", "train", "evaluate", "quantize", "export", "bench", "report")
# One method of each kind (reference, static INT8, 4-bit weights, a fine-tune on the training split): every
# method in the CI test would double its time; the slow test and tests/test_quant.py run them all.
CI_METHODS = ["fp32", "int8-ptq", "int4-gptq", "pruned"]
# Short schedules and searches: these tests check the pipeline's wiring, tests/test_quant.py the methods.
TINY_OPTIONS = {"int8-qat": {"steps": 5, "batch_size": 16}, "pruned": {"steps": 5, "batch_size": 16},
                "int8-smoothquant": {"alphas": [0.5], "search_drawings": 32},
                "int8-mixed": {"sensitivity_drawings": 32}}
TINY_BENCH = {"runs": 5, "warmup": 1, "batch": 4, "threads": [1], "memory": False}


@pytest.fixture
def tiny_config(tmp_path, drawings):
    """``tiny_config(methods)``: a pipeline YAML on 3 real classes x 150 drawings, a cnn_small, tiny settings."""
    store = make_store(drawings, tmp_path / "store", dict.fromkeys(("apple", "cat", "star"), 150))

    def make(methods: list[str] | str) -> Path:
        chosen = list_methods() if methods == "all" else methods
        quantize = {"methods": methods, "calib": 64, "runs": 5, "memory": False,
                    "options": {m: o for m, o in TINY_OPTIONS.items() if m in chosen}}
        config = {"data": {"source": str(store.root)},
                  "train": {"model": "cnn_small", "model_kwargs": {"width": 8}, "epochs": 2, "batch_size": 32,
                            "threads": 1},
                  "evaluate": {"split": "test"}, "quantize": quantize, "export": {"calib": 64},
                  "bench": TINY_BENCH, "report": {}}
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return make


def _stages_run(printed: str) -> list[str]:
    return re.findall(r"^\[(\w+)\] running", printed, flags=re.MULTILINE)


def _check_run(out: Path, methods: list[str]) -> None:
    """Every section of report.md, every artifact of every stage, and the report's numbers are the stages'."""
    report = (out / "report.md").read_text()
    data = json.loads((out / "report.json").read_text())
    headings = re.findall(r"^## (\w+)", report, flags=re.MULTILINE)
    assert headings == ["Data", "Training", "Evaluation", "Quantization", "Export", "Benchmark"]
    for artifact in ("train/model.safetensors", "train/config.yaml", "eval/metrics.json", "report.json",
                     "pipeline.json", "quantize/comparison.json", "quantize/comparison.md", "bench/bench.json",
                     "bench/bench.md"):
        assert (out / artifact).is_file(), artifact

    # every plot the report shows exists, relative to the run folder, and the required ones are there
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert set(images) == {"eval/training_curves.png", "eval/per_class_accuracy.png", "eval/worst_confusion.png",
                           "quantize/accuracy_vs_size.png", "quantize/accuracy_vs_latency.png", "bench/bench.png"}
    for image in images:
        assert (out / image).read_bytes()[:4] == b"\x89PNG", image
    assert f"{out}/" not in report  # files of the run are named relative to it

    # data, training, evaluation: numbers from the stage results
    assert data["evaluate"]["n"] == 3 * 15 and data["data"]["classes"] == ["apple", "cat", "star"]
    assert f"{100 * data['evaluate']['top1']:.2f}%" in report
    assert f"{100 * data['train']['best_val_top1']:.2f}%" in report

    # quantization: one measured row per method, each artifact on disk, the stage's table in the report
    rows = json.loads((out / "quantize" / "comparison.json").read_text())
    assert [r["method"] for r in rows] == methods == [r["method"] for r in data["quantize"]["rows"]]
    for row in rows:
        assert (out / "quantize" / row["artifact"]).is_file() and row["size_bytes"] > 0
        assert 0 <= row["top1"] <= 100 and f"| {row['method']} | {row['bits']} | {row['top1']:.2f} |" in report
    for method, options in TINY_OPTIONS.items():  # the section's method options reached the methods
        if method in methods and "steps" in options:
            notes = next(r for r in rows if r["method"] == method)["notes"]
            assert notes.get("steps", notes.get("fine_tune_steps")) == options["steps"]

    # export: FP32 and INT8 .pte and .onnx, each with its metadata, verified, and listed in the report
    artifacts = data["export"]["artifacts"]
    assert sorted((a["format"], a["quant"]) for a in artifacts) == [("onnx", "int8"), ("onnx", "none"),
                                                                     ("pte", "int8"), ("pte", "none")]
    for a in artifacts:
        path = Path(a["path"])
        meta = json.loads(path.with_name(f"{path.name}.metadata.json").read_text())
        assert meta["artifact"]["bytes"] == path.stat().st_size == a["bytes"]
        check = meta["verification"]
        assert check == a["verification"] and check["drawings"] == 45
        if a["quant"] == "none":
            assert check["top1_agreement"] >= 0.995  # the export stage refuses anything worse
        row = next(line for line in report.splitlines() if line.startswith(f"| `export/{path.name}` |"))
        assert f"{100 * check['top1_agreement']:.2f}%" in row and f"{check['max_abs_logit_diff']:.3g}" in row
        assert ("delegated" in row) if a["format"] == "pte" else ("CPUExecutionProvider" in row)

    # benchmark: the eager model and the four exported files (not exported again), the stage's table
    bench = json.loads((out / "bench" / "bench.json").read_text())
    # with qdm-native built (scripts/setup.sh; tests/test_native.py fails when a compiler is there and it is not),
    # each .pte also has its ExecuTorch C++ row
    cpp = find_native() is not None
    assert [r["name"] for r in bench["results"]] == [
        "PyTorch eager FP32", "ExecuTorch FP32", *["ExecuTorch C++ FP32"] * cpp, "ExecuTorch INT8",
        *["ExecuTorch C++ INT8"] * cpp, "ONNX Runtime FP32", "ONNX Runtime INT8"]
    assert [r["path"] for r in bench["results"][1:] if r["runtime"] != "executorch-cpp"] == \
        [a["path"] for a in artifacts]
    assert not (out / "bench" / "artifacts").exists()
    assert bench["settings"]["threads"] == [1]
    for r in bench["results"]:
        assert f"| {r['name']} | {r['size_bytes'] / 1e3:,.1f} | {r['latency']['1']['p50_ms']:.3f} |" in report


def test_run_end_to_end_and_cache(tiny_config, tmp_path, capsys):
    """The whole pipeline once (about 40 s on 2 cores), then re-runs that must only redo what changed."""
    config_path = tiny_config(CI_METHODS)
    out = tmp_path / "run"
    assert qdm(["run", "--config", str(config_path), "--out", str(out)]) == 0
    assert _stages_run(capsys.readouterr().out) == list(STAGES)
    _check_run(out, CI_METHODS)

    # nothing changed: every stage is cached
    run(config_path, out)
    printed = capsys.readouterr().out
    assert printed.count("] cached") == len(STAGES) and not _stages_run(printed)

    # only the bench section changed: bench and the report run, nothing else
    config = yaml.safe_load(config_path.read_text())
    config["bench"]["runs"] = 6
    config_path.write_text(yaml.safe_dump(config))
    weights = (out / "train" / "model.safetensors").stat().st_mtime_ns
    artifacts = json.loads((out / "report.json").read_text())["export"]["artifacts"]
    exported = {a["path"]: Path(a["path"]).stat().st_mtime_ns for a in artifacts}
    run(config_path, out)
    assert _stages_run(capsys.readouterr().out) == ["bench", "report"]
    assert json.loads((out / "bench" / "bench.json").read_text())["settings"]["runs"] == 6
    assert json.loads((out / "report.json").read_text())["bench"]["settings"]["runs"] == 6
    assert {p: Path(p).stat().st_mtime_ns for p in exported} == exported

    # only evaluate changed: evaluate and the report run; quantize, export and bench stay cached
    config["evaluate"]["split"] = "val"
    config_path.write_text(yaml.safe_dump(config))
    run(config_path, out)
    assert _stages_run(capsys.readouterr().out) == ["evaluate", "report"]
    assert (out / "train" / "model.safetensors").stat().st_mtime_ns == weights
    assert json.loads((out / "report.json").read_text())["evaluate"]["split"] == "val"

    # every stage's entry in pipeline.json reads back into its result type and writes out the same JSON
    state = json.loads((out / "pipeline.json").read_text())
    for stage in PIPELINE_STAGES:
        assert stage.result.from_json(state[stage.name]["result"]).to_json() == state[stage.name]["result"]
    # an entry this version cannot read (say, of an older layout) is not trusted: that stage runs again
    del state["evaluate"]["result"]["top1"]
    (out / "pipeline.json").write_text(json.dumps(state))
    run(config_path, out)
    assert _stages_run(capsys.readouterr().out) == ["evaluate", "report"]
    assert "top1" in json.loads((out / "pipeline.json").read_text())["evaluate"]["result"]


@pytest.mark.slow
def test_run_with_every_quantization_method(tiny_config, tmp_path):
    """``methods: all`` through the pipeline: a measured row and an artifact for every registered method."""
    out = tmp_path / "run"
    assert qdm(["run", "--config", str(tiny_config("all")), "--out", str(out)]) == 0
    _check_run(out, list_methods())


def test_bad_pipeline_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trian: {}\n")
    with pytest.raises(QDMError, match="unknown section"):
        load_pipeline_config(path)
    path.write_text("train: {epocs: 2}\n")
    with pytest.raises(QDMError, match="unknown option"):
        run(path, tmp_path / "out", progress=False)
    # a late section's mistake fails when the config is read, before any stage runs
    bad = {"bench: {rnus: 5}": r"bad\.yaml: bench: unknown option\(s\) rnus",
           "bench: {threads: 2}": r"bench\.threads: expected a list",
           "bench: {memory: 'no'}": r"bench\.memory: expected true or false",
           "quantize: {calib: 0}": r"quantize\.calib: expected an integer >= 1",
           "quantize: {methods: [fp32, int9-ptq]}": r"quantize\.methods: unknown quantization method 'int9-ptq'",
           "quantize: {options: {int8-qat: {stpes: 5}}}": r"quantize\.options\.int8-qat: .*no option 'stpes'",
           "quantize: {methods: [fp32], options: {pruned: {steps: 5}}}": r"quantize\.options: .*'pruned'",
           "export: {calib: -1}": r"export\.calib",
           "evaluate: {split: tset}": r"evaluate\.split",
           "report: {title: x}": r"report: unknown option"}
    for text, message in bad.items():
        path.write_text(text + "\n")
        with pytest.raises(QDMError, match=message):
            run(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "pipeline.json").exists()


def test_shipped_configs_load_and_their_training_sections_are_valid():
    for name in ("default", "shared52", "seed344"):
        config = load_pipeline_config(CONFIGS / f"{name}.yaml")
        assert set(config) == set(SECTIONS)
        assert isinstance(from_dict(config["train"], name), TrainConfig)

    shared = load_pipeline_config(CONFIGS / "shared52.yaml")
    assert shared["train"] == yaml.safe_load((CONFIGS / "default_model.yaml").read_text())  # the same recipe
    assert (REPO / shared["data"]["source"]).resolve() == (REPO.parent / "shared/quickdraw/numpy_bitmap").resolve()

    recipe = from_dict(load_pipeline_config(CONFIGS / "seed344.yaml")["train"], "seed344")
    assert (recipe.model, recipe.optimizer, recipe.lr, recipe.label_smoothing, recipe.weight_decay,
            recipe.warmup_epochs, recipe.batch_size, recipe.patience) == \
        ("vit_tiny_224", "adamw", 1.1e-3, 0.1584, 0.04, 1, 1024, 15)
    spec = SplitSpec(recipe.val_fraction, recipe.test_fraction, recipe.split_seed, recipe.max_per_class)
    rows = split_class_rows("cat", 123_202, spec)  # the official cat file's size; any class >= 5000 is the same
    assert {k: len(v) for k, v in rows.items()} == {"test": 500, "val": 500, "train": 4000}
