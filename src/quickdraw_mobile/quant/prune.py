"""``pruned``: structured channel pruning + a short fine-tune; the smaller FP32 model deploys as it is.

Removing whole channels (not scattered weights) is what makes a model smaller and faster in XNNPACK: a pruned
channel simply is not there. A channel can go when it is private to a pair of layers: a producer (convolution or
Linear) whose output reaches exactly one consumer (convolution or Linear) through per-channel ops only
(BatchNorm, activation, dropout), as inside a residual block (conv1 -> conv2) or a transformer MLP (fc1 -> fc2).
Channels on a residual path are shared by many layers and stay. The pairs are found on the ``torch.export``
graph (every node knows its users), so no model needs a hand-written list.

Each pair keeps the ``1 - sparsity`` share of its channels with the largest magnitude: the L2 norm of the
producer's filter (scaled by its BatchNorm's gain) times the L2 norm of the consumer's matching input weights.
Then a short fine-tune with the model's own recipe recovers most of the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import QDMError
from ..models.profile import count_params
from .finetune import TrainingData, fine_tune
from .registry import QuantizedModel, register_method

LAYER_OPS = {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}
BN_OPS = {torch.ops.aten._native_batch_norm_legit_no_training.default, torch.ops.aten.batch_norm.default}
PASS_THROUGH = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default, torch.ops.aten.gelu.default,
                torch.ops.aten.silu.default, torch.ops.aten.hardswish.default, torch.ops.aten.dropout.default,
                torch.ops.aten.clone.default, torch.ops.aten.hardtanh.default}


@dataclass(frozen=True)
class PruneConfig:
    sparsity: float = 0.5  # share of each prunable layer pair's private channels removed
    steps: int = 300  # fine-tuning steps
    lr: float = 5e-4
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.sparsity < 1:
            raise QDMError(f"sparsity: expected a fraction in (0, 1), got {self.sparsity}")
        if self.steps < 0 or self.lr <= 0:
            raise QDMError(f"pruned: expected steps >= 0 and lr > 0, got {self.steps}, {self.lr}")


@dataclass
class ChannelPair:
    producer: str  # module whose output channels are pruned
    consumer: str  # module whose matching input channels go with them
    norms: list[str] = field(default_factory=list)  # BatchNorms between them


def _module_of(node: torch.fx.Node, param_owner: dict[str, str]) -> str | None:
    """The module owning the weight (argument 1) of a layer or BatchNorm node."""
    weight = node.args[1] if len(node.args) > 1 else None
    return param_owner.get(weight.name) if isinstance(weight, torch.fx.Node) else None


def _single_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def find_channel_pairs(model: nn.Module) -> list[ChannelPair]:
    """Producer -> consumer pairs whose intermediate channels nothing else uses."""
    program = torch.export.export(model.eval(), (torch.zeros(2, 1, 28, 28),))
    signature = program.graph_signature
    owner = {name: fqn.rpartition(".")[0] for name, fqn in
             {**signature.inputs_to_parameters, **signature.inputs_to_buffers}.items()}
    modules = dict(model.named_modules())
    pairs = []
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target not in LAYER_OPS:
            continue
        producer, norms, current = _module_of(node, owner), [], node
        while (user := _single_user(current)) is not None and user.op == "call_function":
            if user.target in BN_OPS and user.args[0] is current:
                norms.append(_module_of(user, owner))
                current = next(iter(user.users)) if user.target != torch.ops.aten.batch_norm.default else user
                if current is not user and (len(user.users) != 1 or current.args[1] != 0):
                    break  # a BatchNorm's other outputs (saved statistics) are used: leave it alone
            elif user.target in PASS_THROUGH and user.args[0] is current:
                current = user
            elif user.target in LAYER_OPS and user.args[0] is current:
                consumer = _module_of(user, owner)
                layers = [modules.get(producer), modules.get(consumer)]
                if all(isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1) for m in layers) \
                        and all(n is not None for n in norms):
                    pairs.append(ChannelPair(producer, consumer, norms))
                break
            else:
                break
    return pairs


def _importance(model: nn.Module, pair: ChannelPair) -> torch.Tensor:
    producer, consumer = model.get_submodule(pair.producer), model.get_submodule(pair.consumer)
    out_norm = producer.weight.detach().flatten(1).norm(dim=1)
    for name in pair.norms:
        bn = model.get_submodule(name)
        out_norm = out_norm * (bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps))
    in_norm = consumer.weight.detach().transpose(0, 1).flatten(1).norm(dim=1)
    return out_norm * in_norm


@torch.no_grad()
def prune_pair(model: nn.Module, pair: ChannelPair, keep: torch.Tensor) -> None:
    """Keep only channels ``keep`` (sorted indices) between the pair's producer and consumer."""
    producer, consumer = model.get_submodule(pair.producer), model.get_submodule(pair.consumer)
    producer.weight = nn.Parameter(producer.weight[keep].clone())
    if producer.bias is not None:
        producer.bias = nn.Parameter(producer.bias[keep].clone())
    if isinstance(producer, nn.Conv2d):
        producer.out_channels = len(keep)
    else:
        producer.out_features = len(keep)
    for name in pair.norms:
        bn = model.get_submodule(name)
        bn.weight, bn.bias = nn.Parameter(bn.weight[keep].clone()), nn.Parameter(bn.bias[keep].clone())
        bn.running_mean, bn.running_var = bn.running_mean[keep].clone(), bn.running_var[keep].clone()
        bn.num_features = len(keep)
    consumer.weight = nn.Parameter(consumer.weight[:, keep].clone())
    if isinstance(consumer, nn.Conv2d):
        consumer.in_channels = len(keep)
    else:
        consumer.in_features = len(keep)


def summary(notes: dict) -> str:
    return f"{notes['params_removed']:.0%} of parameters removed"


@register_method("pruned", PruneConfig, order=80, bits=32, needs_training_data=True, calibrates=False,
                 summary=summary, description="structured channel pruning and a short fine-tune; float32")
def apply(model: nn.Module, config: PruneConfig, calib: torch.Tensor, *, train: TrainingData,
          **_) -> QuantizedModel:
    pairs = find_channel_pairs(model)
    if not pairs:
        raise QDMError("pruned: the model has no channels private to a pair of layers to prune")
    params_before = count_params(model)
    widths = {}
    for pair in pairs:
        score = _importance(model, pair)
        keep = max(1, round(len(score) * (1 - config.sparsity)))
        prune_pair(model, pair, torch.sort(torch.topk(score, keep).indices).values)
        widths[f"{pair.producer} -> {pair.consumer}"] = f"{len(score)} -> {keep}"
    losses = []
    if config.steps:
        torch.manual_seed(config.seed)
        losses = fine_tune(model.train(), train, config.steps, config.lr, batch_size=config.batch_size,
                           seed=config.seed, desc="pruned: fine-tune")
    model.eval()
    params_after = count_params(model)
    notes = {"sparsity": config.sparsity, "pruned_channels": widths, "params_before": params_before,
             "params_after": params_after, "params_removed": 1 - params_after / params_before,
             "fine_tune_steps": config.steps, "lr": config.lr}
    if losses:
        notes["loss_last"] = sum(losses[-20:]) / len(losses[-20:])
    scheme = (f"float32, structured channel pruning ({config.sparsity:.0%} of the private channels of "
              f"{len(pairs)} layer pairs), fine-tuned; XNNPACK")
    return QuantizedModel("pruned", model, 32, scheme, notes)
