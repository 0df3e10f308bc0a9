"""The page's taught-class arithmetic (serve/static/teach.mjs) against the server's (teach.py), run under node."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.serve.app import STATIC
from quickdraw_mobile.teach import TeachParameters, clean_class_name, prototype_of, taught_logits

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

SCRIPT = """
import { checkName, prototypeOf, taughtLogits } from "%s";
let input = "";
for await (const chunk of process.stdin) input += chunk;
const { classes, drawings, teach, names } = JSON.parse(input);
const taught = classes.map((rows) => ({ prototype: prototypeOf(rows, teach.feature_mean) }));
const logits = drawings.map((f) => taughtLogits(f, teach, taught));
const checked = names.map((n) => { const r = checkName(n, ["cat", "The Eiffel Tower"], 2, 0); return r instanceof Error ? null : r; });
console.log(JSON.stringify({ prototypes: taught.map((c) => c.prototype), logits, checked }));
"""


def test_js_prototypes_and_logits_are_the_servers():
    rng = np.random.default_rng(0)
    width = 16
    # ReLU-like features (non-negative, as the model's), three classes of 3 to 5 drawings, ten drawings to score.
    classes = [np.maximum(rng.normal(size=(n, width)), 0).astype(np.float32) for n in (3, 4, 5)]
    drawings = np.maximum(rng.normal(size=(10, width)), 0).astype(np.float32)
    params = TeachParameters(torch.from_numpy(np.abs(rng.normal(size=width)).astype(np.float32) * 0.5), 9.5, -1.5,
                             "test")
    names = ["snail", "  hot air balloon ", "cat", "CAT", "the eiffel tower", "a/b", "", "x" * 41, "don't_stop-1"]
    request = {"classes": [c.tolist() for c in classes], "drawings": drawings.tolist(), "names": names,
               "teach": {"feature_mean": params.feature_mean.tolist(), "scale": params.scale,
                         "offset": params.offset}}
    script = SCRIPT % (STATIC / "teach.mjs").as_uri()
    done = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(request),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)

    prototypes = torch.stack([prototype_of(torch.from_numpy(c), params) for c in classes])
    np.testing.assert_allclose(answer["prototypes"], prototypes.numpy(), atol=1e-6)
    expected = taught_logits(torch.from_numpy(drawings), prototypes, params).numpy()
    np.testing.assert_allclose(answer["logits"], expected, atol=1e-5)
    assert np.ptp(expected) > 1.0  # the logits differ between drawings and classes: the comparison means something
    # Names: kept stripped; refused when known (in any case), with other characters, empty or too long.
    assert answer["checked"] == ["snail", "hot air balloon", None, None, None, None, None, None, "don't_stop-1"]
    for name, checked in zip(names, answer["checked"], strict=True):  # the server's rule, known names aside
        if name.strip().lower() not in ("cat", "the eiffel tower"):
            assert checked == _server_name(name), name


def _server_name(name: str) -> str | None:
    try:
        return clean_class_name(name)
    except QDMError:
        return None
