"""What each stage of ``qdm run`` hands on: to the stages after it, to ``pipeline.json`` and to the report.

One small dataclass per stage. ``to_json`` gives the stage's entry in ``pipeline.json`` (and ``report.json``),
paths as strings; ``from_json`` reads it back for a cached stage, and raises ``KeyError``/``TypeError``/
``ValueError`` on an entry it cannot read, which the pipeline takes as "run the stage again".
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from .runfolder import RunFolder


def _plain(value):
    """``value`` as JSON: paths and run folders as strings, inside lists too."""
    if isinstance(value, RunFolder):
        return str(value.root)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class StageResult:
    """The fields, in order, are the JSON keys; a field annotated ``Path`` is read back as a path."""

    complete = True  # a stage that stopped early (an interrupted training) says so and is resumed next time

    def to_json(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, values: dict):
        present = [f for f in fields(cls) if f.name in values or f.default is MISSING]  # a newer field keeps its default
        return cls(**{f.name: Path(values[f.name]) if f.type == "Path" else values[f.name] for f in present})


@dataclass
class DataResult(StageResult):
    store: Path  # the store every later stage reads
    source: str  # as configured: 'embedded' or a folder
    classes: list[str]
    drawings: int
    split: dict[str, int]  # drawings per split: train, val, test
    sources: list[str]  # where the store's drawings came from


@dataclass
class TrainResult(StageResult):
    run: RunFolder
    summary: dict  # what ``train.loop.train`` returns (and writes to train_summary.json)

    def to_json(self) -> dict:
        return {"run": str(self.run.root), **self.summary}

    @classmethod
    def from_json(cls, values: dict) -> TrainResult:
        summary = dict(values)
        return cls(RunFolder(summary.pop("run")), summary)

    @property
    def complete(self) -> bool:
        return self.summary.get("complete", True)

    @property
    def model(self) -> str:
        return self.summary["model"]

    @property
    def params(self) -> int:
        return self.summary["params"]

    @property
    def macs(self) -> int:
        return self.summary["macs"]

    @property
    def epochs_done(self) -> int:
        return self.summary["epochs_done"]

    @property
    def best_val_top1(self) -> float:
        return self.summary["best_val_top1"]

    @property
    def best_epoch(self) -> int | None:
        return self.summary["best_epoch"]

    @property
    def seconds(self) -> float:
        return self.summary["train_seconds_this_call"]


@dataclass
class EvalResult(StageResult):
    dir: Path  # metrics.json and the plots
    split: str
    n: int
    top1: float
    top5: float
    map3: float
    macro_precision: float
    macro_recall: float
    macro_f1: float

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.json"


@dataclass
class QuantizeResult(StageResult):
    dir: Path
    comparison: Path  # comparison.json
    markdown: Path  # comparison.md, the table the report embeds
    plots: list[Path]  # accuracy against size, accuracy against latency
    rows: list[dict]  # comparison.json's rows (method notes made JSON-safe there)

    @classmethod
    def from_json(cls, values: dict) -> QuantizeResult:
        return cls(Path(values["dir"]), Path(values["comparison"]), Path(values["markdown"]),
                   [Path(p) for p in values["plots"]], values["rows"])


@dataclass
class ExportedArtifact(StageResult):
    path: Path
    metadata: Path  # the metadata.json beside it
    format: str  # pte | onnx
    file: str
    runtime: str
    quant: str  # none | int8
    bytes: int
    sha256: str
    verification: dict  # its agreement with the eager model, in its own runtime
    lowering: list[str]
    ops: dict  # delegated / not delegated operators (.pte) or operators and provider (.onnx)
    calibration: dict | None  # INT8 only
    method: str | None = None  # how it was made: a quantization method (fp32, int8-ptq) or onnxruntime-int8


@dataclass
class ExportResult(StageResult):
    dir: Path
    artifacts: list[ExportedArtifact]

    def to_json(self) -> dict:
        return {"dir": str(self.dir), "artifacts": [a.to_json() for a in self.artifacts]}

    @classmethod
    def from_json(cls, values: dict) -> ExportResult:
        return cls(Path(values["dir"]), [ExportedArtifact.from_json(a) for a in values["artifacts"]])


@dataclass
class BenchResult(StageResult):
    dir: Path
    json_path: Path  # bench.json
    markdown_path: Path  # bench.md
    plot_path: Path  # bench.png
    bench: dict  # what ``bench.runner.run_bench`` returns: machine, settings, results

    def to_json(self) -> dict:
        return {"dir": str(self.dir), "json": str(self.json_path), "markdown": str(self.markdown_path),
                "plot": str(self.plot_path), **self.bench}

    @classmethod
    def from_json(cls, values: dict) -> BenchResult:
        bench = dict(values)
        paths = [Path(bench.pop(key)) for key in ("dir", "json", "markdown", "plot")]
        return cls(*paths, bench)


@dataclass
class ReportResult(StageResult):
    markdown: Path  # report.md
    json: Path  # report.json


@dataclass
class RunResults:
    """Every stage's result before the report's: what report.md and report.json are written from."""

    data: DataResult
    train: TrainResult
    evaluate: EvalResult
    quantize: QuantizeResult
    export: ExportResult
    bench: BenchResult

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name).to_json() for f in fields(self)}
