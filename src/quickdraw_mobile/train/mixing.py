"""Mixup and CutMix: each training batch blended with a shuffled copy of itself, the loss blended the same way.

Both regularize by asking for soft answers on images no real drawing looks like: mixup overlays two drawings
(pixel-wise ``lam * a + (1 - lam) * b``); CutMix pastes a box of drawing b into drawing a, and ``lam`` is the share
of a that is left. The loss is ``lam * CE(a's label) + (1 - lam) * CE(b's label)`` (and the same for soft targets).

Every random draw comes from a generator seeded by (seed, rank, global step), so a resumed run mixes each batch
exactly as the uninterrupted run did, and DDP ranks mix differently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import QDMError
from ..options import option


@dataclass(frozen=True)
class MixConfig:
    mixup_alpha: float = option(0.0, "mixup: Beta(alpha, alpha) blend of batch pairs (0 = off)")
    cutmix_alpha: float = option(0.0, "CutMix: Beta(alpha, alpha) share of a drawing kept, the rest pasted (0 = off)")
    prob: float = option(1.0, "share of batches mixed when mixup or CutMix is on (with both on, half of those "
                         "are CutMix)", flat="mix_prob")

    def __post_init__(self) -> None:
        for name in ("mixup_alpha", "cutmix_alpha"):
            if not getattr(self, name) >= 0.0:
                raise QDMError(f"{name}: expected a value >= 0 (0 turns it off), got {getattr(self, name)}")
        if not 0.0 <= self.prob <= 1.0:
            raise QDMError(f"mix_prob: expected a probability in [0, 1], got {self.prob}")

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


@dataclass(frozen=True)
class MixedBatch:
    x: torch.Tensor
    partner: torch.Tensor  # row i was mixed with row partner[i]
    lam: float  # weight of each row's own label (1.0: not mixed)


def step_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """The random stream of one training step."""
    return np.random.default_rng(np.random.SeedSequence([seed, rank, step]))


def cutmix_box(lam: float, side: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a square-ish box covering about ``1 - lam`` of a side x side image.

    The centre is uniform over the image and the box is clipped at the border, so the real area can be smaller;
    callers recompute ``lam`` from the returned box.
    """
    cut = side * math.sqrt(1.0 - lam)
    cy, cx = rng.uniform(0, side, size=2)
    top, bottom = int(np.clip(round(cy - cut / 2), 0, side)), int(np.clip(round(cy + cut / 2), 0, side))
    left, right = int(np.clip(round(cx - cut / 2), 0, side)), int(np.clip(round(cx + cut / 2), 0, side))
    return top, bottom, left, right


def mix_batch(x: torch.Tensor, cfg: MixConfig, rng: np.random.Generator) -> MixedBatch:
    """Mix a batch ``x`` (B, C, H, W) with a random permutation of itself (or leave it, with 1 - prob)."""
    batch = x.shape[0]
    if not cfg.enabled or rng.random() >= cfg.prob:
        return MixedBatch(x, torch.arange(batch, device=x.device), 1.0)
    partner = torch.from_numpy(rng.permutation(batch)).to(x.device)  # drawn on the host, used where x is
    use_cutmix = cfg.cutmix_alpha > 0 and (cfg.mixup_alpha == 0 or rng.random() < 0.5)
    if use_cutmix:
        lam = float(rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha))
        top, bottom, left, right = cutmix_box(lam, x.shape[-1], rng)
        mixed = x.clone()
        mixed[:, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]  # gathers the box only
        lam = 1.0 - (bottom - top) * (right - left) / (x.shape[-1] * x.shape[-2])
    else:
        lam = float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
        mixed = x * lam + x[partner] * (1.0 - lam)
    return MixedBatch(mixed, partner, lam)


def mixed_loss(loss_fn, logits: torch.Tensor, targets: tuple[torch.Tensor, ...], mixed: MixedBatch) -> torch.Tensor:
    """``loss_fn(logits, *targets)`` blended over each row's own targets and its partner's.

    ``targets`` are per-row tensors (the labels, and the soft targets when distilling), gathered alike.
    """
    if mixed.lam == 1.0:
        return loss_fn(logits, *targets)
    partners = tuple(t[mixed.partner] for t in targets)
    return mixed.lam * loss_fn(logits, *targets) + (1.0 - mixed.lam) * loss_fn(logits, *partners)
