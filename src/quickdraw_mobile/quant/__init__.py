"""Quantization methods, one file each, all behind one call: ``quantize(model, method, calib, **options)``.

Each method module registers its ``apply`` with ``registry.register_method`` and declares there what the rest of
the project reads: its place in the comparison table, its weight bits, a one-line description, whether it
fine-tunes on the training split, the summary of its notes, how it saves a result without a .pte. The registry
finds the modules itself; ``list_methods()`` (or ``qdm quantize --help``, or the README's table) names them:
fp32 (the reference), INT8 (int8-ptq, -smoothquant, -qat, -mixed), 4-bit weights (int4-rtn, -gptq, -awq), pruned.

Each returns a ``QuantizedModel``: the runnable model, its weight bits, a one-line scheme, notes (layers kept in
float, searched alpha, sparsity, ...) and ``to_pte()``, its deployable ExecuTorch program (``artifact.save_pte``
writes it with its sidecars). Shared pieces: ``pt2e`` (the one XNNPACK quantizer configuration, every INT8 path),
``stats`` (layer-input statistics), ``int4`` (the 4-bit format), ``scaling`` (equivalent per-channel rescaling),
``finetune`` (short fine-tunes with the training recipe), ``inputs`` (what every method is given, the same for
``qdm quantize`` and ``qdm export --quant METHOD``). ``compare`` is ``qdm quantize``: every method measured the
same way, side by side.
"""

from .finetune import TrainingData
from .registry import QuantizedModel, get_method, list_methods, make_config, parse_methods, quantize

__all__ = ["QuantizedModel", "TrainingData", "get_method", "list_methods", "make_config", "parse_methods",
           "quantize"]
