"""Quantization methods, one file each, all behind one call: ``quantize(model, method, calib, **options)``.

    fp32               the reference (registry.py)
    int8-ptq           PT2E static INT8 for XNNPACK, calibrated (pt2e.py)
    int8-smoothquant   activation outliers migrated into the weights, then int8-ptq (smoothquant.py)
    int8-qat           PT2E quantization-aware fine-tuning, then INT8 (pt2e.py)
    int8-mixed         int8-ptq with the most sensitive layers kept in float (mixed.py)
    int4-rtn           4-bit group-wise weights, round to nearest (rtn.py)
    int4-gptq          4-bit weights with Hessian-based error compensation (gptq.py)
    int4-awq           4-bit weights with activation-aware channel scaling (awq.py)
    pruned             structured channel pruning + a short fine-tune (prune.py)

Each returns a ``QuantizedModel``: the runnable model, its weight bits, a one-line scheme, notes (layers kept in
float, searched alpha, sparsity, ...) and ``to_pte()``, its deployable ExecuTorch program (``artifact.save_pte``
writes it with its sidecars). Shared pieces: ``stats`` (layer-input statistics), ``int4`` (the 4-bit format),
``scaling`` (equivalent per-channel rescaling), ``finetune`` (short fine-tunes with the training recipe).
``compare`` is ``qdm quantize``: every method measured the same way, side by side.
"""

from .finetune import TrainingData
from .registry import QuantizedModel, get_method, list_methods, make_config, parse_methods, quantize

__all__ = ["QuantizedModel", "TrainingData", "get_method", "list_methods", "make_config", "parse_methods",
           "quantize"]
