"""The device decisions, each checked on the CPU with the machine's capabilities passed in."""

from __future__ import annotations

import contextlib

import pytest
import torch

from quickdraw_mobile.device import (
    Available,
    apply_backend_settings,
    backend_settings,
    conv_peak_gmacs,
    ddp_backend,
    gpu_peak_gmacs,
    optimizer_options,
    peak_gmacs_of,
    pinned,
    precision,
    resolve_device,
    to_device,
)
from quickdraw_mobile.errors import QDMError

CPU_ONLY, TWO_GPUS, APPLE = Available(0, False), Available(2, False), Available(0, True)


def test_auto_takes_cuda_then_mps_then_cpu():
    assert resolve_device("auto", available=TWO_GPUS, local_rank=None) == torch.device("cuda", 0)
    assert resolve_device("auto", available=Available(1, True), local_rank=None).type == "cuda"
    assert resolve_device("auto", available=APPLE) == torch.device("mps")
    assert resolve_device("auto", available=CPU_ONLY) == torch.device("cpu")
    assert resolve_device("AUTO ", available=CPU_ONLY) == torch.device("cpu")


def test_explicit_devices_and_local_rank():
    assert resolve_device("cpu", available=TWO_GPUS) == torch.device("cpu")
    assert resolve_device("cuda:1", available=TWO_GPUS, local_rank=0) == torch.device("cuda", 1)
    # under torchrun, LOCAL_RANK picks the process's GPU for "cuda" and "auto"
    assert resolve_device("cuda", available=TWO_GPUS, local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("auto", available=TWO_GPUS, local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("mps", available=APPLE) == torch.device("mps")


def test_local_rank_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda", available=TWO_GPUS) == torch.device("cuda", 1)
    assert resolve_device("auto", available=CPU_ONLY) == torch.device("cpu")  # gloo ranks share the CPU


@pytest.mark.parametrize(("name", "available", "message"), [
    ("cuda", CPU_ONLY, "--device cuda: no CUDA device on this machine (available: cpu)"),
    ("cuda:2", TWO_GPUS, "--device cuda:2: no cuda:2 on this machine (available: cpu, cuda:0, cuda:1)"),
    ("mps", CPU_ONLY, "--device mps: no MPS device on this machine (available: cpu)"),
    ("gpu", CPU_ONLY, "--device gpu: expected one of auto, cpu, cuda, cuda:N, mps"),
    ("cuda:x", TWO_GPUS, "--device cuda:x: expected one of auto, cpu, cuda, cuda:N, mps"),
])
def test_a_device_that_is_not_there_is_a_one_line_error(name, available, message):
    with pytest.raises(QDMError) as info:
        resolve_device(name, available=available, local_rank=None)
    assert str(info.value) == message


def test_this_machine_resolves_auto_to_what_it_has():
    here = Available.here()
    assert "cpu" in here.names()
    assert resolve_device("auto").type == ("cuda" if here.cuda_count else "mps" if here.mps else "cpu")


def test_precision_on_cuda_is_bf16_or_fp16_with_a_scaler():
    cuda = torch.device("cuda", 0)
    bf16 = precision(cuda, bf16=False, bf16_supported=True)
    assert (bf16.dtype, bf16.scaled, bf16.name) == (torch.bfloat16, False, "bfloat16")
    fp16 = precision(cuda, bf16=False, bf16_supported=False)
    assert (fp16.dtype, fp16.scaled, fp16.name) == (torch.float16, True, "float16")


def test_precision_on_the_cpu_follows_the_config():
    cpu = torch.device("cpu")
    assert precision(cpu, bf16=False).dtype is None
    assert precision(cpu, bf16=False).name == "float32"
    assert precision(cpu, bf16=False).grad_scaler() is None
    assert precision(cpu, bf16=True).dtype == torch.bfloat16
    with precision(cpu, bf16=True).autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with precision(cpu, bf16=False).autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32


def test_scaler_is_made_for_float16():
    scaler = precision(torch.device("cpu"), bf16=False)
    assert scaler.grad_scaler() is None
    fp16 = precision(torch.device("cuda", 0), bf16=False, bf16_supported=False)
    assert fp16.scaled  # its GradScaler("cuda") is built on a GPU; on the CPU the decision is what is checked


def test_optimizer_copies_backends_and_ddp_follow_the_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert optimizer_options(cuda) == {"fused": True}
    assert optimizer_options(cpu) == {"foreach": True}
    assert pinned(cuda) and not pinned(cpu)
    assert backend_settings(cuda)["cuda.matmul.allow_tf32"] is True
    assert backend_settings(cuda)["float32_matmul_precision"] == "high"
    assert backend_settings(cpu) == {}
    assert ddp_backend(cuda) == "nccl"
    assert ddp_backend(cpu) == "gloo"


def test_cpu_settings_and_copies_change_nothing():
    before = torch.get_float32_matmul_precision()
    apply_backend_settings(torch.device("cpu"))
    assert torch.get_float32_matmul_precision() == before
    x = torch.arange(4.0)
    assert to_device(x, torch.device("cpu")) is x


def test_gpu_peaks_come_from_the_table():
    assert gpu_peak_gmacs("NVIDIA H100 80GB HBM3") == 989.0e3 / 2
    assert gpu_peak_gmacs("NVIDIA H100 PCIe") == 756.0e3 / 2
    assert gpu_peak_gmacs("NVIDIA A100-SXM4-40GB") == 312.0e3 / 2
    assert gpu_peak_gmacs("NVIDIA L40S") == 362.0e3 / 2
    assert gpu_peak_gmacs("NVIDIA L4") == 121.0e3 / 2
    assert gpu_peak_gmacs("Some Future GPU") is None


def test_cpu_peak_is_measured_without_touching_the_global_rng():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    assert conv_peak_gmacs(1, channels=16, batch=2, repeats=2) > 0
    assert torch.equal(torch.rand(3), expected)
    peak, source = peak_gmacs_of(torch.device("cpu"), precision(torch.device("cpu"), False), measure=False)
    assert (peak, source) == (None, "not measured")


def test_batches_are_normalized_augmented_and_mixed_where_they_go():
    """The loader's uint8 rows go to the device and are normalized and warped there; mixing stays on it ("meta"
    stands in for a GPU: every op runs, on shapes only)."""
    from quickdraw_mobile.data.embedded import embedded_store
    from quickdraw_mobile.data.loader import AugmentConfig, BatchLoader
    from quickdraw_mobile.data.store import SplitSpec, Store
    from quickdraw_mobile.train.mixing import MixConfig, mix_batch, step_rng

    split = Store.open(embedded_store()).splits(SplitSpec(0.1, 0.1, 0, 50))["train"]
    loader = BatchLoader(split, 16, augment=AugmentConfig(), device=torch.device("meta"), prefetch=0,
                         channels_last=True)
    x, y = next(iter(loader))
    assert (x.device.type, x.dtype, tuple(x.shape), y.device.type) == ("meta", torch.float32, (16, 1, 28, 28), "meta")
    mixed = mix_batch(x, MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0, prob=1.0), step_rng(0, 0, 1))
    assert mixed.x.device.type == "meta" and mixed.partner.device.type == "meta"
    on_cpu = BatchLoader(split, 16, augment=AugmentConfig(), device=torch.device("cpu"), prefetch=0)
    plain = BatchLoader(split, 16, augment=AugmentConfig(), prefetch=0)
    assert all(torch.equal(a, b) for a, b in zip(next(iter(on_cpu)), next(iter(plain)), strict=True))


def test_the_step_takes_its_device_and_precision_from_the_policy():
    from quickdraw_mobile.train.config import TrainConfig
    from quickdraw_mobile.train.step import TrainStep

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))
    step = TrainStep(TrainConfig(device="cpu", bf16=True, channels_last=False), model, lambda i: 0.1)
    assert step.device == torch.device("cpu") and step.precision.name == "bfloat16" and step.scaler is None
    assert step.optimizer.defaults["foreach"] is True and not step.optimizer.defaults.get("fused")
    result = step.step(torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 2, 0]), 0)
    assert result.count == 4
    assert "cuda_rng" not in step.state_dict() and "scaler" not in step.state_dict()
    with pytest.raises(QDMError, match="no CUDA device") if not torch.cuda.is_available() else contextlib.nullcontext():
        TrainStep(TrainConfig(device="cuda", channels_last=False), model, lambda i: 0.1)


def test_train_help_lists_device_and_compile(capsys):
    from quickdraw_mobile.cli import main as qdm

    with pytest.raises(SystemExit):
        qdm(["train", "--help"])
    text = capsys.readouterr().out
    assert "--device DEVICE" in text and "--compile" in text and "cuda:N" in text


def test_gpu_check_without_a_gpu_says_so_and_exits_0():
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PY": sys.executable}  # no GPU, whatever the machine has
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); "
                                   "nothing to check")
    bad = subprocess.run(["bash", str(script), "--bogus", "1"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr
