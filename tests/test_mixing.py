"""Mixup and CutMix: the mixed pixels and lam are what the definitions say (resume with mixing: test_train)."""

from __future__ import annotations

import pytest
import torch

from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.train.config import from_dict
from quickdraw_mobile.train.mixing import MixConfig, mix_batch, mixed_loss, step_rng


def numbered_batch(batch: int = 16) -> torch.Tensor:
    """Image i is filled with the value i, so every mixed pixel tells where it came from."""
    return torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 1, 28, 28).clone()


def test_mixup_blends_each_image_with_its_partner():
    x = numbered_batch()
    mixed = mix_batch(x, MixConfig(mixup_alpha=0.4), step_rng(0, 0, 7))
    assert 0.0 < mixed.lam < 1.0 and sorted(mixed.partner.tolist()) == list(range(16))
    expected = mixed.lam * x + (1 - mixed.lam) * x[mixed.partner]
    torch.testing.assert_close(mixed.x, expected)


@pytest.mark.parametrize("step", range(5))
def test_cutmix_pastes_one_box_and_lam_is_the_kept_share(step):
    x = numbered_batch()
    mixed = mix_batch(x, MixConfig(cutmix_alpha=1.0), step_rng(0, 0, step))
    for i in range(16):
        own = mixed.x[i] == i
        pasted = mixed.x[i] == mixed.partner[i].item()
        if mixed.partner[i] != i:
            assert (own | pasted).all() and not (own & pasted).any()
            assert own.float().mean().item() == pytest.approx(mixed.lam)
            rows, cols = torch.nonzero(pasted[0], as_tuple=True)
            if len(rows):  # the pasted pixels form one axis-aligned box
                box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                assert box.item() == len(rows)


def test_mixing_is_deterministic_per_step_and_off_when_disabled():
    x = numbered_batch()
    a, b = (mix_batch(x, MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0), step_rng(1, 0, 3)) for _ in range(2))
    assert torch.equal(a.x, b.x) and a.lam == b.lam
    other = mix_batch(x, MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0), step_rng(1, 1, 3))  # another DDP rank
    assert not torch.equal(a.x, other.x)
    never = MixConfig(mixup_alpha=0.2, prob=0.0)
    assert all(mix_batch(x, never, step_rng(0, 0, s)).lam == 1.0 for s in range(20))
    half = [mix_batch(x, MixConfig(mixup_alpha=0.2, prob=0.5), step_rng(0, 0, s)).lam < 1 for s in range(200)]
    assert 60 < sum(half) < 140


def test_mixed_loss_weights_both_labels():
    logits = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    mixed = mix_batch(numbered_batch(4), MixConfig(mixup_alpha=1.0), step_rng(0, 0, 0))
    ce = torch.nn.functional.cross_entropy
    expected = mixed.lam * ce(logits, y) + (1 - mixed.lam) * ce(logits, y[mixed.partner])
    torch.testing.assert_close(mixed_loss(ce, logits, (y,), mixed), expected)


def test_bad_mixing_options_are_named():
    with pytest.raises(QDMError, match="mix_prob"):
        from_dict(dict(mixup_alpha=0.2, mix_prob=1.5))
    with pytest.raises(QDMError, match="cutmix_alpha"):
        from_dict(dict(cutmix_alpha=-1))
