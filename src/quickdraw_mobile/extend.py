"""``qdm extend``: add classes to a trained model from a few drawings each, keeping the classes it knows.

The shots come from a store, a folder of ``.ndjson`` stroke files (rendered by ``data.ingest``, as ``qdm data
ingest`` does) or any folder ``ingest`` reads, such as the shared ``simplified/`` and ``raw/`` files. Classes the
model already knows are an error when named with ``classes``, and skipped when the whole source is taken.

Three methods, each writing an ordinary run folder (``create_model(config.model, len(labels),
**config.model_kwargs)`` loads it, so evaluate, predict, quantize and export work on it):

- ``prototype``: SimpleShot's centred cosine classifier. Each new class is the mean of its shots' pooled
  features (and of augmented copies of them), centred on the old classes' mean feature and L2-normalised; a
  drawing's logit for it is ``scale * cos + offset``. ``scale`` and ``offset`` (two numbers for all new classes)
  are fitted on fresh augmented copies of the shots (each against prototypes without its own drawing when K > 1)
  and on the old classes' replay drawings, with the old logits as they are, so that the new logits sit in the old
  head's range. The model gets ``cosine_classes`` (``models/cnn.py``): the old head and its logits are untouched.
- ``probe``: new rows of the ordinary linear head, trained (full batch, Adam, fixed seed) on the frozen features
  of the shots (and augmented copies) and of the replay drawings against the old logits, which stay as they were.
  With ``features="multiscale"`` (``--features multiscale``) the probe reads the frozen model's multi-scale
  features instead (``models/cnn.py``'s ``multiscale_features``: stage 1 pooled by average, by max and on a 2x2
  grid, the pooled features, stage 2 max-pooled, each block unit length, averaged with the mirrored drawing's,
  rescaled to the pooled features' mean norm on the replay drawings): the new rows go into a ``wide_head`` (model
  option ``wide_classes``), the old head untouched.
- ``finetune``: the probe, then a short fine-tune of the whole model through ``train.step.TrainStep`` (as QAT
  does, ``quant.finetune``) on the replay drawings plus the shots, class-balanced, with the run's augmentation.
  Every logit changes (the old classes' too).

Replay drawings (the old classes' training drawings) come from the run's bundled ``calibration.npz`` (``default``
has one) or, with ``replay``, from the training split of the store the model was trained on.

With ``old_kept`` (``--old-kept``), any method's new classes are then calibrated as a group on augmented copies
of those replay drawings (``calibrate``): one offset on all new logits, the largest that leaves at least that
fraction of them on an old class, so that many new classes fitted on a few drawings each do not swallow the old.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.loader import AugmentConfig, augment_batch, normalize
from .data.store import MANIFEST, Split, Store
from .errors import QDMError
from .export.calibration import CALIBRATION_FILE, SAMPLE_FILE, Drawings, calibration_set, save_drawings
from .fileio import write_bytes_atomic, write_json_atomic, write_text_atomic
from .modelref import LoadedModel, bundled_name, load_model, resolve_run
from .models import create_model
from .models.profile import describe
from .options import CALIBRATION_SIZE
from .runfolder import RunFolder, save_weights, write_labels

METHODS = ("prototype", "probe", "finetune")
FEATURES = ("pooled", "multiscale")  # what the probe reads: the pooled vector, or the multi-scale one
REPLAY_SIZE = CALIBRATION_SIZE  # old-class drawings the fits see: a run's whole calibration set
VIEWS = 8  # augmented copies of each shot (the run's training augmentation) besides the shot itself
FIT_STEPS = 300  # full-batch Adam steps of the prototype scale/offset and of the probe
FINETUNE_STEPS = 200
CALIBRATION_VIEWS = 2  # augmented copies of each replay drawing the new group's offset is calibrated on


@dataclass
class Extension:
    """What an extension adds: the new class names and their drawings (uint8 (K, 784) each)."""

    classes: list[str]
    shots: list[np.ndarray]
    source: str
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ the shots
def source_drawings(source: str | Path, known: list[str], classes: list[str] | None = None) -> dict[str, np.ndarray]:
    """Every drawing of each new class at ``source`` (a store, or files ``data.ingest`` reads), by class name."""
    from .data.classes import resolve_class
    from .data.ingest import ingest, source_classes

    path = Path(source)
    if not path.exists():
        raise QDMError(f"--data: {path}: no such store, folder or file")
    store = Store.open(path) if (path / MANIFEST).exists() else None
    available = store.classes if store is not None else source_classes(path)
    if classes is not None:
        wanted = [resolve_class(c) for c in classes]
        already = [c for c in wanted if c in known]
        if already:
            raise QDMError(f"--classes: the model already knows {', '.join(already)}")
        missing = [c for c in wanted if c not in available]
        if missing:
            raise QDMError(f"--data: {path} has no drawings of {', '.join(missing)}")
    else:
        wanted = [c for c in available if c not in known]  # the classes it knows are skipped
    if not wanted:
        raise QDMError(f"--data: {path} holds no class the model does not know already")
    if store is not None:
        return {name: np.array(store.array(name)) for name in wanted}
    with tempfile.TemporaryDirectory(prefix="qdm-extend-") as staging:
        store = ingest(path, Path(staging) / "store", classes=wanted)
        return {name: np.array(store.array(name)) for name in wanted}


def pick_shots(drawings: dict[str, np.ndarray], shots: int, seed: int, where: str) -> Extension:
    """``shots`` drawings of each class, chosen with ``seed`` (the same every time)."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise QDMError(f"--shots: expected a positive number of drawings per class, got {shots!r}")
    picked = []
    for index, (name, pixels) in enumerate(drawings.items()):
        if len(pixels) < shots:
            raise QDMError(f"--shots {shots}: class {name!r} has only {len(pixels)} drawings at {where}")
        rows = np.sort(np.random.default_rng([seed, index]).permutation(len(pixels))[:shots])
        picked.append(pixels[rows])
    return Extension(list(drawings), picked, where)


def replay_drawings(model_ref: str | Path, replay: str | Path | None) -> Drawings:
    """The old classes' drawings the fits see: the run's bundled calibration.npz, or its training split of
    ``replay``."""
    if replay is None and not (resolve_run(model_ref).root / CALIBRATION_FILE).is_file():
        raise QDMError(f"--replay: required for {model_ref} (the store it was trained on; the run folder has "
                       f"no {CALIBRATION_FILE} of old-class drawings)")
    return calibration_set(model_ref, replay, n=REPLAY_SIZE)


# ------------------------------------------------------------------------------------------------ features
def augmentation(loaded: LoadedModel) -> AugmentConfig:
    """The run's training augmentation (the default one when the run trained without)."""
    return loaded.config.augmentation() or AugmentConfig()


@torch.inference_mode()
def views_of(pixels: np.ndarray, views: int, aug: AugmentConfig, seed: int) -> torch.Tensor:
    """The normalized drawings followed by ``views`` augmented copies of all of them: (N * (1 + views), 1, 28, 28),
    drawing i's copies at rows i, N + i, 2N + i, ..."""
    x = normalize(pixels)
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([x, *(augment_batch(x, aug, generator) for _ in range(views))])


@torch.inference_mode()
def forward_with_features(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled features and the logits of ``x`` from one forward pass (eval mode): the model's
    ``logits_and_features`` (the cnn family's)."""
    model.eval()
    logits, features = model.logits_and_features(x)
    return features, logits


@torch.inference_mode()
def features_and_logits(model: torch.nn.Module, x: torch.Tensor, batch: int = 1024) -> tuple[torch.Tensor, ...]:
    """The pooled features and the logits of ``x``, in eval mode, on the CPU."""
    feats, logits = [], []
    for start in range(0, len(x), batch):
        chunk_feats, chunk_logits = forward_with_features(model, x[start: start + batch])
        feats.append(chunk_feats)
        logits.append(chunk_logits)
    return torch.cat(feats), torch.cat(logits)


@torch.inference_mode()
def all_outputs(model: torch.nn.Module, x: torch.Tensor, batch: int = 1024) -> tuple[torch.Tensor, ...]:
    """The logits, the pooled features and the multi-scale features (unit blocks, not rescaled) of ``x``
    (``model.outputs``), in eval mode, on the CPU."""
    model.eval()
    chunks = [model.outputs(x[start: start + batch]) for start in range(0, len(x), batch)]
    return tuple(torch.cat(parts) for parts in zip(*chunks, strict=True))


def _check_features(loaded: LoadedModel, features: str = "pooled") -> None:
    if not hasattr(loaded.model, "logits_and_features"):
        raise QDMError(f"qdm extend: model {loaded.config.model!r} has no features(x) (the cnn family has)")
    if features == "multiscale" and not hasattr(loaded.model, "outputs"):
        raise QDMError(f"--features multiscale: model {loaded.config.model!r} has no multi-scale features "
                       "(the cnn family has)")


@dataclass
class FitData:
    """Features and logits of the shots' views (labels 0.. of the new classes, drawing index per row) and of
    the replay drawings (old labels)."""

    shot_feats: torch.Tensor
    shot_logits: torch.Tensor
    shot_labels: torch.Tensor
    shot_drawing: torch.Tensor
    replay_feats: torch.Tensor
    replay_logits: torch.Tensor
    replay_labels: torch.Tensor
    info: dict = field(default_factory=dict)  # how the features were made (the multi-scale scale)


def multiscale_scale(model: torch.nn.Module, replay_pooled: torch.Tensor, replay_multiscale: torch.Tensor) -> float:
    """The factor that brings the multi-scale features to the pooled ones' mean norm on the replay drawings (the
    range the old head's weights, and the probe's start and weight decay, are made for); the model's own when it
    has a wide head already."""
    if getattr(model, "wide_head", None) is not None:
        return float(model.multiscale_scale)
    return float(replay_pooled.norm(dim=1).mean() / replay_multiscale.norm(dim=1).mean())


def fit_data(loaded: LoadedModel, ext: Extension, replay: Drawings, views: int, seed: int,
             features: str = "pooled") -> FitData:
    """The features (``features``: pooled | multiscale, the latter rescaled by ``multiscale_scale``) of the
    shots' (augmented) views and of the replay drawings, computed once."""
    pixels = np.concatenate(ext.shots)
    labels = torch.from_numpy(np.repeat(np.arange(len(ext.shots)), [len(s) for s in ext.shots]))
    x = views_of(pixels, views, augmentation(loaded), seed)
    info = {}
    if features == "multiscale":
        shot_logits, _, shot_feats = all_outputs(loaded.model, x)
        replay_logits, replay_pooled, replay_feats = all_outputs(loaded.model, normalize(replay.pixels))
        scale = multiscale_scale(loaded.model, replay_pooled, replay_feats)
        shot_feats, replay_feats, info = shot_feats * scale, replay_feats * scale, {"multiscale_scale": scale}
    else:
        shot_feats, shot_logits = features_and_logits(loaded.model, x)
        replay_feats, replay_logits = features_and_logits(loaded.model, normalize(replay.pixels))
    return FitData(shot_feats, shot_logits, labels.repeat(views + 1), torch.arange(len(pixels)).repeat(views + 1),
                   replay_feats, replay_logits, torch.from_numpy(replay.labels), info)


# ------------------------------------------------------------------------------------------------ fitting
def balanced_fit(params: list[torch.Tensor], new_logits, data: FitData, old_shot_logits: torch.Tensor,
                 shot_inputs: torch.Tensor, replay_inputs: torch.Tensor, *, steps: int = FIT_STEPS,
                 lr: float = 0.05, weight_decay: float = 0.0) -> list[float]:
    """Full-batch Adam on ``params``: cross-entropy over all logits (the old ones fixed, ``new_logits(inputs)``
    appended), the old and the new classes' groups weighted equally and each class equally within its group,
    shots labelled after the old classes. Returns the losses."""
    old = data.replay_logits.shape[1]
    logits_fixed = torch.cat([old_shot_logits, data.replay_logits])
    labels = torch.cat([data.shot_labels + old, data.replay_labels])
    inputs = torch.cat([shot_inputs, replay_inputs])
    counts = torch.bincount(labels, minlength=old + int(data.shot_labels.max()) + 1).float()
    # the old and the new classes weigh the same in all (each class equally within its group): weighted by class
    # alone, 293 new classes would outvote 52 old ones, and the fit would give the old drawings away
    present = counts > 0
    groups = torch.tensor([int(present[:old].sum()), int(present[old:].sum())]).clamp_min(1).float()
    per_group = torch.cat([groups[0].expand(old), groups[1].expand(len(counts) - old)])
    weight = torch.where(present, 1.0 / (per_group * counts.clamp_min(1)), torch.zeros_like(counts))
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(torch.cat([logits_fixed, new_logits(inputs)], 1), labels, weight=weight / weight.sum())
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def prototypes(data: FitData, mean: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The new classes' prototypes (unit vectors) and, per shot view, its class's prototype without the views of
    its own drawing (the same prototype when the class has one drawing)."""
    centred = unit(data.shot_feats - mean)
    sums = torch.zeros(classes, centred.shape[1]).index_add_(0, data.shot_labels, centred)
    counts = torch.bincount(data.shot_labels, minlength=classes).float()
    drawings = int(data.shot_drawing.max()) + 1
    own = torch.zeros(drawings, centred.shape[1]).index_add_(0, data.shot_drawing, centred)
    own_count = torch.bincount(data.shot_drawing, minlength=drawings).float()
    rest = sums[data.shot_labels] - own[data.shot_drawing]
    rest_count = (counts[data.shot_labels] - own_count[data.shot_drawing])[:, None]
    leave_out = torch.where(rest_count > 0, rest / rest_count.clamp_min(1), sums[data.shot_labels])
    return unit(sums), unit(leave_out)


def fit_prototype(data: FitData, fresh: FitData, classes: int,
                  mean: torch.Tensor | None = None) -> dict[str, torch.Tensor | float]:
    """The cosine head's weights and bias (scale * prototype, offset) and the feature mean it centres with.
    ``fresh``: other augmented views of the same shots (the scale is fitted on them, not on the views the
    prototypes are made of). ``mean``: the model's own centre when it has cosine classes already."""
    mean = data.replay_feats.mean(0) if mean is None else mean.detach()
    protos, _ = prototypes(data, mean, classes)
    _, leave_out = prototypes(fresh, mean, classes)
    shot_cos_all = unit(fresh.shot_feats - mean) @ protos.T
    own = (unit(fresh.shot_feats - mean) * leave_out).sum(1)
    shot_cos = shot_cos_all.scatter(1, fresh.shot_labels[:, None], own[:, None])  # its own class left out
    replay_cos = unit(fresh.replay_feats - mean) @ protos.T
    log_scale = torch.tensor(float(np.log(10.0)), requires_grad=True)
    offset = torch.tensor(0.0, requires_grad=True)
    losses = balanced_fit([log_scale, offset], lambda cos: log_scale.exp() * cos + offset, fresh,
                          fresh.shot_logits, shot_cos, replay_cos)
    scale = float(log_scale.detach().exp())
    return {"weight": scale * protos, "bias": torch.full((classes,), float(offset.detach())), "feature_mean": mean,
            "scale": scale, "offset": float(offset.detach()), "fit_loss": losses[-1]}


def fit_probe(model: torch.nn.Module, data: FitData, classes: int, seed: int) -> dict[str, torch.Tensor | float]:
    """New rows of the linear head, started at the prototypes (scaled to the old rows' norm) and trained."""
    head = model.head
    torch.manual_seed(seed)
    means = torch.zeros(classes, data.shot_feats.shape[1]).index_add_(0, data.shot_labels, data.shot_feats)
    weight = (unit(means) * head.weight.detach().norm(dim=1).mean()).requires_grad_(True)
    bias = torch.full((classes,), float(head.bias.detach().mean())).requires_grad_(True)
    losses = balanced_fit([weight, bias], lambda f: f @ weight.T + bias, data, data.shot_logits,
                          data.shot_feats, data.replay_feats, lr=0.01, weight_decay=1e-4)
    return {"weight": weight.detach(), "bias": bias.detach(), "fit_loss": losses[-1]}


# ------------------------------------------------------------------------------------------------ the model
def extended_model(loaded: LoadedModel, kwargs: dict, classes: int, rows: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The run's architecture with ``classes`` more outputs: its weights, plus ``rows`` appended (``head.weight``,
    ``head.bias``, ``cosine_head.weight``, ... as state-dict names; a buffer such as ``feature_mean`` replaced)."""
    model = create_model(loaded.config.model, len(loaded.labels) + classes, **kwargs)
    state = dict(loaded.model.state_dict())
    for name, value in rows.items():
        state[name] = torch.cat([state[name], value]) if name in state and name.endswith(("weight", "bias")) \
            else value
    model.load_state_dict(state)
    return model.eval()


def fresh_views(views: int) -> int:
    """Augmented copies per shot, besides the shot, that the prototype scale is fitted on."""
    return max(1, views // 4)


def prototype_model(loaded: LoadedModel, data: FitData, fresh: FitData, classes: int):
    """The run's model with ``classes`` cosine classes fitted on ``data`` (their scale on ``fresh``)."""
    fitted = fit_prototype(data, fresh, classes, getattr(loaded.model, "feature_mean", None))
    kwargs = {**loaded.config.model_kwargs,
              "cosine_classes": loaded.config.model_kwargs.get("cosine_classes", 0) + classes}
    model = extended_model(loaded, kwargs, classes, {"cosine_head.weight": fitted["weight"],
                           "cosine_head.bias": fitted["bias"], "feature_mean": fitted["feature_mean"]})
    return model, kwargs, {"scale": fitted["scale"], "offset": fitted["offset"], "fit_loss": fitted["fit_loss"]}


def check_method_fits(loaded: LoadedModel, method: str, features: str) -> None:
    """New classes go after the old ones: a model whose last logits come from a cosine or a wide head takes more
    only into that head."""
    kwargs = loaded.config.model_kwargs
    if kwargs.get("cosine_classes", 0) and method != "prototype":
        raise QDMError("--method: a model extended with prototypes takes more classes by --method prototype only")
    if kwargs.get("wide_classes", 0) and (method == "prototype" or features != "multiscale"):
        raise QDMError("--features: a model extended with --features multiscale takes more classes by --method "
                       "probe (or finetune) --features multiscale only")
    if features == "multiscale" and method == "prototype":
        raise QDMError("--features multiscale: only with --method probe or finetune")


def probe_model(loaded: LoadedModel, data: FitData, classes: int, seed: int, features: str = "pooled"):
    """The run's model with ``classes`` new rows of its linear head (``features`` pooled) or of its wide head
    (multiscale), fitted on ``data``."""
    check_method_fits(loaded, "probe", features)
    fitted = fit_probe(loaded.model, data, classes, seed)
    if features == "multiscale":
        kwargs = {**loaded.config.model_kwargs,
                  "wide_classes": loaded.config.model_kwargs.get("wide_classes", 0) + classes}
        rows = {"wide_head.weight": fitted["weight"], "wide_head.bias": fitted["bias"],
                "multiscale_scale": torch.tensor(data.info["multiscale_scale"])}
    else:
        kwargs, rows = loaded.config.model_kwargs, {"head.weight": fitted["weight"], "head.bias": fitted["bias"]}
    model = extended_model(loaded, kwargs, classes, rows)
    return model, kwargs, {"fit_loss": fitted["fit_loss"], "features": features, **data.info}


def extend_prototype(loaded: LoadedModel, ext: Extension, replay: Drawings, views: int, seed: int, steps: int,
                     features: str = "pooled"):
    check_method_fits(loaded, "prototype", features)
    data = fit_data(loaded, ext, replay, views, seed)
    fresh = fit_data(loaded, ext, replay, fresh_views(views), seed + 1)
    return prototype_model(loaded, data, fresh, len(ext.classes))


def extend_probe(loaded: LoadedModel, ext: Extension, replay: Drawings, views: int, seed: int, steps: int = 0,
                 features: str = "pooled"):
    check_method_fits(loaded, "probe", features)  # before the features are computed
    return probe_model(loaded, fit_data(loaded, ext, replay, views, seed, features), len(ext.classes), seed,
                       features)


def extend_finetune(loaded: LoadedModel, ext: Extension, replay: Drawings, views: int, seed: int, steps: int,
                    features: str = "pooled"):
    from .quant.finetune import TrainingData, fine_tune

    model, kwargs, info = extend_probe(loaded, ext, replay, views, seed, features=features)
    labels = [*loaded.labels, *ext.classes]
    old = [replay.pixels[replay.labels == c] for c in range(len(loaded.labels))]
    arrays = [*old, *ext.shots]
    split = Split("train", labels, [np.arange(len(a)) for a in arrays], arrays)
    model.train()
    losses = fine_tune(model, TrainingData(split, loaded.config), steps, lr=loaded.config.lr * 0.1,
                       batch_size=64, seed=seed, balanced=True, desc="extend: fine-tune")
    return model.eval(), kwargs, {**info, "finetune_steps": steps, "finetune_loss": losses[-1]}


EXTENDERS = {"prototype": extend_prototype, "probe": extend_probe, "finetune": extend_finetune}


# ------------------------------------------------------------------------------------------------ calibration
def _check_fraction(old_kept: float) -> None:
    if isinstance(old_kept, bool) or not isinstance(old_kept, int | float) or not 0 < old_kept <= 1:
        raise QDMError(f"--old-kept: expected a fraction in (0, 1], got {old_kept!r}")


def calibrate_groups(logits: torch.Tensor, new: int, old_kept: float) -> float:
    """The offset to add to the last ``new`` of ``logits`` (those of the old classes' training drawings): the
    largest for which at least ``old_kept`` of the drawings still rank an old class first.

    Many new classes fitted on a few drawings each can swallow the old ones (or stay too shy): one offset for
    the new group sets where the two groups meet. A drawing moves to a new class once the offset exceeds its
    margin ``max(old logits) - max(new logits)``, so the offset is the k-th smallest margin,
    k = floor((1 - old_kept) * N), less a hair: only the k drawings with a smaller margin move. Positive
    when the new classes may rise, negative when they must fall."""
    _check_fraction(old_kept)
    if not 0 < new < logits.shape[1]:
        raise QDMError(f"calibration: expected 1..{logits.shape[1] - 1} new classes, got {new}")
    margin = logits[:, :-new].max(1).values - logits[:, -new:].max(1).values
    k = int(np.floor((1 - old_kept) * len(margin) + 1e-9))  # 1e-9: (1 - 0.9) * 1000 is 99.99999999999999
    kth = float(margin.double().sort().values[k])
    return kth - 1e-5 * max(1.0, abs(kth))  # just below it: float32 rounding must not decide the tie


@torch.no_grad()
def shift_new_logits(model: torch.nn.Module, new: int, offset: float) -> None:
    """Add ``offset`` to the biases of the last ``new`` outputs: the wide head's, or the cosine head's, when the
    model has one (the last logits are theirs)."""
    head = next(h for h in (getattr(model, "wide_head", None), getattr(model, "cosine_head", None), model.head)
                if h is not None)
    head.bias[-new:] += offset


def calibration_views(replay: Drawings, aug: AugmentConfig, seed: int) -> torch.Tensor:
    """``CALIBRATION_VIEWS`` augmented copies of each replay drawing (not the drawings themselves): the model has
    trained on the drawings, and is surer of them than of drawings it never saw; fresh augmented copies of them
    come closer to the latter (on ``default``'s validation split: 0.6 points of the 52 classes' top-1 lost at
    ``old_kept`` 0.99, against 2.0 calibrated on the drawings themselves)."""
    return views_of(replay.pixels, CALIBRATION_VIEWS, aug, seed)[len(replay.pixels):]


def calibrate(model: torch.nn.Module, replay: Drawings, new: int, old_kept: float, aug: AugmentConfig,
              seed: int) -> dict:
    """Shift the new classes' logits by ``calibrate_groups`` on ``calibration_views`` of the replay drawings;
    what was done, for the run's summary."""
    x = calibration_views(replay, aug, seed)
    _, logits = features_and_logits(model, x)
    offset = calibrate_groups(logits, new, old_kept)
    before = old_group_share(logits, new)
    shift_new_logits(model, new, offset)
    _, logits = features_and_logits(model, x)
    return {"old_kept": old_kept, "group_offset": offset, "calibration_views": CALIBRATION_VIEWS,
            "replay_old_kept_before": before, "replay_old_kept_after": old_group_share(logits, new)}


def old_group_share(logits: torch.Tensor, new: int) -> float:
    """The fraction of rows whose top logit is an old class's (counted exactly, not as a float32 mean)."""
    return int((logits.argmax(1) < logits.shape[1] - new).sum()) / len(logits)


def group_metrics(logits: np.ndarray, labels: np.ndarray, old: int) -> dict[str, dict]:
    """Top-1 / top-5 of the drawings of the old classes (labels < ``old``) and of the new ones, each among all
    the logits and ("within") among its own group's only."""
    from .evaluate.metrics import topk_accuracy

    out = {}
    for group, rows, cols in (("old", labels < old, slice(0, old)), ("new", labels >= old, slice(old, None))):
        scores, truth = logits[rows], labels[rows]
        within = truth - (0 if group == "old" else old)
        out[group] = {"n": int(rows.sum()), "top1": topk_accuracy(scores, truth, 1),
                      "top5": topk_accuracy(scores, truth, 5),
                      "top1_within": topk_accuracy(scores[:, cols], within, 1),
                      "top5_within": topk_accuracy(scores[:, cols], within, 5)} if rows.any() else {"n": 0}
    return out


# ------------------------------------------------------------------------------------------------ the run folder
def write_run(out: Path, loaded: LoadedModel, model: torch.nn.Module, kwargs: dict, ext: Extension,
              replay: Drawings, summary: dict) -> RunFolder:
    """An ordinary run folder: config (the run's, with the model options), weights, labels, summary, and
    calibration.npz (replay + shots) and the run's sample.npz, so that export needs no --data."""
    run = RunFolder(out)
    labels = [*loaded.labels, *ext.classes]
    config = loaded.config.updated(model_kwargs=kwargs, classes=labels if loaded.config.classes else None)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run.config_path, config.to_yaml())
    save_weights(run.weights_path, model.state_dict())
    write_labels(run.labels_path, labels)
    shot_labels = np.repeat(np.arange(len(ext.shots)) + len(loaded.labels), [len(s) for s in ext.shots])
    save_drawings(out / CALIBRATION_FILE, np.concatenate([replay.pixels, *ext.shots]),
                  np.concatenate([replay.labels, shot_labels]))
    sample = loaded.run.root / SAMPLE_FILE
    if sample.is_file():
        write_bytes_atomic(out / SAMPLE_FILE, sample.read_bytes())
    counted = describe(model)
    write_json_atomic(run.summary_path, {"model": config.model, "params": counted["params"], "macs": counted["macs"],
                                         "classes": len(labels), "complete": True, "extended": summary})
    return run


def extend(model_ref: str | Path, source: str | Path, out: str | Path, method: str = "prototype", shots: int = 10,
           seed: int = 0, classes: list[str] | None = None, replay: str | Path | None = None,
           views: int = VIEWS, steps: int = FINETUNE_STEPS, old_kept: float | None = None,
           features: str = "pooled") -> dict:
    """Add the new classes at ``source`` to the model ``model_ref`` from ``shots`` drawings each; write the run
    folder ``out``. ``steps``: the fine-tune's optimizer steps; ``old_kept``: calibrate the new group
    (``calibrate``); ``features``: what the probe reads (``FEATURES``). Returns its ``train_summary.json``'s
    ``extended`` section."""
    loaded = _checked_model(model_ref, out, method, views, steps, old_kept, features)
    ext = pick_shots(source_drawings(source, loaded.labels, classes), shots, seed, str(source))
    ext.info = {"shots": shots, "data": str(source), **ext.info}
    return _extend_loaded(loaded, model_ref, ext, out, method, seed, replay, views, steps, old_kept, features)


def check_options(method: str, views: int, steps: int, old_kept: float | None, features: str = "pooled") -> None:
    if method not in METHODS:
        raise QDMError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    if features not in FEATURES:
        raise QDMError(f"--features: expected one of {', '.join(FEATURES)}, got {features!r}")
    if isinstance(views, bool) or not isinstance(views, int) or views < 0:
        raise QDMError(f"--views: expected a count >= 0, got {views!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise QDMError(f"--steps: expected a positive number of fine-tune steps, got {steps!r}")
    if old_kept is not None:
        _check_fraction(old_kept)


def _checked_model(model_ref: str | Path, out: str | Path, method: str, views: int, steps: int,
                   old_kept: float | None, features: str) -> LoadedModel:
    """The options checked, ``out`` checked to be free, and the model loaded and checked to take ``method``."""
    check_options(method, views, steps, old_kept, features)
    if RunFolder(Path(out)).config_path.exists():
        raise QDMError(f"--out: {out} holds a run already; choose a new folder")
    loaded = load_model(model_ref)
    _check_features(loaded, features)
    check_method_fits(loaded, method, features)
    return loaded


def extend_with(model_ref: str | Path, ext: Extension, out: str | Path, method: str = "prototype", seed: int = 0,
                replay: str | Path | None = None, views: int = VIEWS, steps: int = FINETUNE_STEPS,
                old_kept: float | None = None, features: str = "pooled") -> dict:
    """``extend`` with the new classes' drawings given (``ext``, its ``info`` going into the summary): every
    drawing of ``ext.shots`` is a shot."""
    loaded = _checked_model(model_ref, out, method, views, steps, old_kept, features)
    return _extend_loaded(loaded, model_ref, ext, out, method, seed, replay, views, steps, old_kept, features)


def _extend_loaded(loaded: LoadedModel, model_ref: str | Path, ext: Extension, out: str | Path, method: str,
                   seed: int, replay: str | Path | None, views: int, steps: int, old_kept: float | None,
                   features: str) -> dict:
    """The fit, the calibration and the run folder of ``extend`` and ``extend_with``, on the model loaded once."""
    replayed = replay_drawings(model_ref, replay)
    torch.manual_seed(seed)
    model, kwargs, info = EXTENDERS[method](loaded, ext, replayed, views, seed, steps, features=features)
    if old_kept is not None:
        info = {**info, **calibrate(model, replayed, len(ext.classes), old_kept, augmentation(loaded), seed + 2)}
    summary = {"from": bundled_name(model_ref) or str(Path(model_ref).resolve()), "method": method,
               "features": features, "shots": None, "seed": seed, "views": views, "old_classes": len(loaded.labels),
               "new_classes": ext.classes, "data": ext.source, "replay": replayed.source, **ext.info, **info}
    write_run(Path(out), loaded, model, kwargs, ext, replayed, summary)
    return summary
