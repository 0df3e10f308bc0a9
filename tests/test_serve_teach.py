"""Teaching the server new classes (``qdm serve --teach``): POST/DELETE /classes, the teach folder, the token,
and the taught classes in /predict, /classes and /model. The model is the bundled default."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from quickdraw_mobile.cli import main
from quickdraw_mobile.data.loader import normalize
from quickdraw_mobile.data.render import render_strokes
from quickdraw_mobile.errors import QDMError
from quickdraw_mobile.export.calibration import load_drawings
from quickdraw_mobile.extend import forward_with_features
from quickdraw_mobile.modelref import load_model
from quickdraw_mobile.serve import create_app, default_teach_dir, teach_token_for
from quickdraw_mobile.serve.app import browser_model_info
from quickdraw_mobile.teach import MAX_TEACH_DRAWINGS, teach_parameters

SQUARE = [[[30, 225, 225, 30, 30], [30, 30, 225, 225, 30]]]


def zigzags(n: int, start: int = 0) -> list:
    """``n`` hand-drawn zigzags (a class the default model lacks), each stretched and bent its own way."""
    out = []
    for i in range(start, start + n):
        xs = [round(x * (0.7 + 0.05 * (i % 6))) for x in (0, 60, 120, 180, 250)]
        ys = [round(y * (0.5 + 0.1 * (i % 5))) + (9 * (i % 3) if k % 2 else 0)
              for k, y in enumerate((200, 40, 200, 40, 200))]
        out.append([[xs, ys]])
    return out


@pytest.fixture(scope="module")
def params(served_model):
    return teach_parameters(served_model)


@pytest.fixture
def make_client(served_model, tmp_path):
    """``make_client(**create_app options)``: a client of the default model teaching into ``tmp_path/taught``."""
    def client(**options) -> TestClient:
        return TestClient(create_app(served_model, **{"teach_dir": tmp_path / "taught", **options}))
    return client


def _teach(client, name: str, drawings: list, fmt: str = "simplified", token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/classes", json={"name": name, "drawings": drawings, "format": fmt}, headers=headers)


def _top(client, drawing, k: int = 5, fmt: str = "simplified") -> list[dict]:
    response = client.post("/predict", json={"drawing": drawing, "format": fmt, "top_k": k})
    assert response.status_code == 200, response.text
    return response.json()["top"]


# --------------------------------------------------------------------------------------- teaching works
def test_a_taught_class_is_predicted_for_new_drawings_of_it_and_not_for_others(make_client, served_model):
    client = make_client()
    response = _teach(client, "zigzag", zigzags(5))
    assert response.status_code == 201, response.text
    assert response.json() == {"name": "zigzag", "drawings": 5, "classes": len(served_model.labels) + 1}
    held_out = zigzags(6, start=5)
    assert all(_top(client, drawing)[0]["class"] == "zigzag" for drawing in held_out)
    square = _top(client, SQUARE)
    assert square[0]["class"] == "square" and square[0]["prob"] > 0.5
    assert "zigzag" not in [t["class"] for t in _top(client, SQUARE, k=3)]


def test_the_probabilities_follow_the_teaching_formula(make_client, served_model, params):
    """softmax over [the model's logits, scale * cos(unit(f - mean), prototype) + offset], prototype = the unit
    mean of the taught drawings' centred unit features: computed here by hand from model.features."""
    client = make_client()
    taught = zigzags(4)
    assert _teach(client, "zigzag", taught).status_code == 201
    answer = client.post("/predict", json={"drawing": SQUARE, "format": "simplified", "top_k": 60}).json()["top"]

    def unit(x):
        return x / x.norm(dim=1, keepdim=True)

    with torch.no_grad():
        shots = served_model.model.features(normalize(np.stack([render_strokes(d, "simplified") for d in taught])))
        prototype = unit(unit(shots - params.feature_mean).mean(0, keepdim=True))
        x = normalize(render_strokes(SQUARE, "simplified")[None])
        logit = params.scale * (unit(served_model.model.features(x) - params.feature_mean) @ prototype.T) + params.offset
        probs = torch.softmax(torch.cat([served_model.model(x), logit], 1), 1)[0]
    names = [*served_model.labels, "zigzag"]
    assert len(answer) == len(names) == 53
    assert [t["prob"] for t in answer] == pytest.approx([float(probs[names.index(t["class"])]) for t in answer],
                                                        abs=2e-6)


def test_one_forward_pass_gives_the_models_features_and_logits(served_model):
    x = normalize(np.stack([render_strokes(d, "simplified") for d in zigzags(3)]))
    features, logits = forward_with_features(served_model.model, x)
    with torch.no_grad():
        torch.testing.assert_close(features, served_model.model.features(x))
        torch.testing.assert_close(logits, served_model.model(x))


def test_real_drawings_of_taught_classes_reach_the_top_5(shared_data, make_client, served_model):
    """Four classes the model lacks, taught from 5 official drawings each, on the next 20 of each: in the top 5
    almost always, first most of the time; the model's own drawings keep their answer nearly always."""
    taught = ["envelope", "ladder", "sun", "triangle"]
    assert not set(taught) & set(served_model.labels)
    client = make_client()
    held_out = {}
    for name in taught:
        lines = (shared_data / "simplified" / f"{name}.ndjson").read_text().splitlines()
        drawings = [json.loads(line)["drawing"] for line in lines]
        assert _teach(client, name, drawings[:5]).status_code == 201
        held_out[name] = drawings[5:25]
    answers = {name: [[t["class"] for t in _top(client, d)] for d in drawings] for name, drawings in held_out.items()}
    top5 = {name: float(np.mean([name in top for top in tops])) for name, tops in answers.items()}
    top1 = float(np.mean([top[0] == name for name, tops in answers.items() for top in tops]))
    print(f"\ntaught from 5 drawings each, 20 new drawings each: top-5 {top5}, top-1 {top1:.2f}")
    assert min(top5.values()) >= 0.9
    assert top1 >= 0.7
    old = load_drawings(served_model.run.root / "calibration.npz", len(served_model.labels))
    rows = np.arange(0, len(old.labels), 10)
    with torch.no_grad():
        plain = served_model.model(normalize(old.pixels[rows])).argmax(1).numpy()
    predictor = client.app.state.predictor
    kept = [predictor.predict(old.pixels[r], 1)[0]["class"] == served_model.labels[p]
            for r, p in zip(rows, plain, strict=True)]
    print(f"the model's own answer kept on {np.mean(kept):.3f} of {len(rows)} of its calibration drawings")
    assert np.mean(kept) >= 0.95


# ------------------------------------------------------------------------------------ refusals and limits
def test_teaching_is_refused_with_403_when_off(served_model):
    client = TestClient(create_app(served_model))
    for response in (_teach(client, "zigzag", zigzags(3)), client.delete("/classes/zigzag")):
        assert response.status_code == 403
        assert "--teach" in response.json()["detail"]
    teach = client.get("/model").json()["teach"]
    assert teach["enabled"] is False and teach["token_required"] is False


def test_a_token_when_required_must_be_the_right_bearer_token(make_client):
    client = make_client(teach_token="s3cret")
    assert _teach(client, "zigzag", zigzags(3)).status_code == 401
    assert _teach(client, "zigzag", zigzags(3), token="wrong").status_code == 401
    basic = client.post("/classes", json={"name": "zigzag", "drawings": zigzags(3)},
                        headers={"Authorization": "Basic s3cret"})
    assert basic.status_code == 401 and basic.headers["www-authenticate"] == "Bearer"
    assert client.delete("/classes/zigzag").status_code == 401
    assert _teach(client, "zigzag", zigzags(3), token="s3cret").status_code == 201
    assert client.delete("/classes/zigzag", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/model").json()["teach"]["token_required"] is True


def test_names_the_model_knows_are_409_in_any_case(make_client):
    client = make_client()
    assert _teach(client, "zigzag", zigzags(3)).status_code == 201
    for name in ("ZigZag", " zigzag ", "Cat", "the eiffel tower"):
        response = _teach(client, name, zigzags(3))
        assert response.status_code == 409, name
        assert "knows" in response.json()["detail"]


@pytest.mark.parametrize(("name", "drawings", "expected"), [
    ("zigzag", zigzags(2), "drawings"),
    ("zigzag", zigzags(MAX_TEACH_DRAWINGS + 1), "drawings"),
    ("zigzag", [*zigzags(2), []], "drawings[2]: drawing has no points"),
    ("zigzag", [[[[], []]], *zigzags(2)], "drawings[0]: drawing has no points"),
    ("", zigzags(3), "name"),
    ("   ", zigzags(3), "name"),
    ("zig/zag", zigzags(3), "name"),
    ("z" * 41, zigzags(3), "name"),
])
def test_bad_requests_are_422_naming_the_field(make_client, name, drawings, expected, tmp_path):
    client = make_client()
    response = _teach(client, name, drawings)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(expected)
    assert client.get("/classes").json()["origins"][-1]["origin"] == "trained"
    assert not list((tmp_path / "taught").glob("*.json"))


def test_the_class_limit_is_409(make_client, monkeypatch):
    monkeypatch.setattr("quickdraw_mobile.serve.taught.MAX_TAUGHT_CLASSES", 2)
    client = make_client()
    assert _teach(client, "zigzag", zigzags(3)).status_code == 201
    assert _teach(client, "zig zag 2", zigzags(3, start=3)).status_code == 201
    response = _teach(client, "zig-zag 3", zigzags(3, start=6))
    assert response.status_code == 409 and "delete one" in response.json()["detail"]
    assert client.delete("/classes/zigzag").status_code == 200
    assert _teach(client, "zig-zag 3", zigzags(3, start=6)).status_code == 201


# ------------------------------------------------------------------------------------ the teach folder
def test_taught_classes_come_back_after_a_restart_and_deleted_ones_do_not(make_client, served_model, tmp_path):
    client = make_client()
    assert _teach(client, "zigzag", zigzags(4)).status_code == 201
    assert _teach(client, "Lightning bolt", zigzags(3, start=20), fmt="auto").status_code == 201
    assert _teach(client, "Sam's mark", [SQUARE, *zigzags(2)]).status_code == 201
    before = client.get("/classes").json()
    probe = _top(client, zigzags(1, start=9)[0], k=8)
    assert len(list((tmp_path / "taught").glob("*.json"))) == 3

    restarted = make_client()
    assert restarted.get("/classes").json() == before
    assert _top(restarted, zigzags(1, start=9)[0], k=8) == probe
    assert before["origins"][-3:] == [{"name": "zigzag", "origin": "taught", "drawings": 4},
                                      {"name": "Lightning bolt", "origin": "taught", "drawings": 3},
                                      {"name": "Sam's mark", "origin": "taught", "drawings": 3}]

    assert restarted.delete("/classes/lightning BOLT").json() == {"deleted": "Lightning bolt",
                                                                 "classes": len(served_model.labels) + 2}
    assert restarted.delete("/classes/lightning bolt").status_code == 404
    assert restarted.delete("/classes/cat").status_code == 409
    again = make_client().get("/classes").json()["classes"]
    assert again[-2:] == ["zigzag", "Sam's mark"] and "Lightning bolt" not in again
    assert len(list((tmp_path / "taught").glob("*.json"))) == 2


def test_a_corrupt_teach_file_stops_the_start_naming_it(make_client, served_model, tmp_path):
    assert _teach(make_client(), "zigzag", zigzags(3)).status_code == 201
    (path,) = (tmp_path / "taught").glob("*.json")
    path.write_text(path.read_text()[:-20])
    with pytest.raises(QDMError, match=str(path)) as error:
        create_app(served_model, teach_dir=tmp_path / "taught")
    assert "\n" not in str(error.value)
    record = {"format": "qdm-taught-class", "version": 1, "name": "zigzag", "stroke_format": "simplified",
              "order": 0, "drawings": zigzags(2)}
    path.write_text(json.dumps(record))
    with pytest.raises(QDMError, match=f"{path}: drawings: 2 drawings"):
        create_app(served_model, teach_dir=tmp_path / "taught")


def test_predictions_while_classes_come_and_go_are_whole(make_client, served_model):
    """Concurrent predictions see a class either fully taught or not at all (never a name without its logit)."""
    client = make_client()
    known = set(served_model.labels) | {"zigzag"}

    def predict(_):
        return [t["class"] for t in _top(client, zigzags(1, start=7)[0], k=len(served_model.labels) + 1)]

    with ThreadPoolExecutor(4) as pool:
        answers = pool.map(predict, range(40))
        for _ in range(3):
            assert _teach(client, "zigzag", zigzags(3)).status_code == 201
            assert client.delete("/classes/zigzag").status_code == 200
        answers = list(answers)
    assert all(set(a) <= known and len(a) == len(set(a)) for a in answers)
    assert {len(a) for a in answers} <= {len(served_model.labels), len(served_model.labels) + 1}


# ------------------------------------------------------------------------------ /model, /classes, the CLI
def test_model_reports_the_teach_parameters_and_limits(make_client, served_model, params):
    teach = make_client().get("/model").json()["teach"]
    assert teach["enabled"] is True and teach["token_required"] is False
    assert (teach["min_drawings"], teach["max_drawings"], teach["max_classes"]) == (3, 20, 50)
    assert teach["feature_mean"] == pytest.approx(params.feature_mean.tolist(), abs=1e-6)
    assert len(teach["feature_mean"]) == served_model.model.features(torch.zeros(1, 1, 28, 28)).shape[1]
    assert (teach["scale"], teach["offset"]) == pytest.approx((params.scale, params.offset))
    assert teach["scale"] > 1.0  # a cosine in -1..1 scaled into the range of the model's logits


@pytest.fixture(scope="module")
def extended_run(tmp_path_factory):
    """The default model extended (prototypes) with two classes it lacks, drawn as strokes, 3 drawings each."""
    folder = tmp_path_factory.mktemp("strokes")
    (folder / "zigzag.ndjson").write_text("".join(json.dumps({"word": "zigzag", "drawing": d}) + "\n"
                                                  for d in zigzags(3)))
    triangles = [[[[20, 128 + 9 * i, 236 - 5 * i, 20], [220, 20 + 7 * i, 220, 220]]] for i in range(3)]
    (folder / "triangle.ndjson").write_text("".join(json.dumps({"word": "triangle", "drawing": d}) + "\n"
                                                    for d in triangles))
    out = tmp_path_factory.mktemp("extended") / "run"
    assert main(["extend", "--model", "default", "--data", str(folder), "--out", str(out), "--shots", "3",
                 "--views", "1"]) == 0
    return out


def test_an_extended_run_lists_its_origins_and_teaches_with_its_cosine_head(extended_run, tmp_path):
    loaded = load_model(extended_run)
    client = TestClient(create_app(loaded, teach_dir=tmp_path / "taught"))
    assert _teach(client, "star of david", [SQUARE, *zigzags(2)]).status_code == 201
    body = client.get("/classes").json()
    origins = {o["origin"]: [] for o in body["origins"]}
    for o in body["origins"]:
        origins[o["origin"]].append((o["name"], o["drawings"]))
    assert body["classes"] == [o["name"] for o in body["origins"]] == [*loaded.labels, "star of david"]
    assert origins["extended"] == [("triangle", 3), ("zigzag", 3)]
    assert origins["taught"] == [("star of david", 3)]
    assert len(origins["trained"]) == 52 and {d for _, d in origins["trained"]} == {None}

    params = teach_parameters(loaded)
    summary = json.loads((extended_run / "train_summary.json").read_text())["extended"]
    head = loaded.model.cosine_head.requires_grad_(False)
    assert params.scale == pytest.approx(float(head.weight[0].norm()))
    assert params.scale == pytest.approx(summary["scale"], rel=1e-5)
    assert params.offset == pytest.approx(float(head.bias[0]))
    assert params.offset == pytest.approx(summary["offset"], abs=1e-5)
    assert torch.equal(params.feature_mean, loaded.model.feature_mean)


def test_teach_parameters_are_the_same_every_time(served_model, params):
    again = teach_parameters(load_model("default"))  # another load of the model: fitted again, not the cached fit
    assert again is not params
    assert (again.scale, again.offset) == (params.scale, params.offset)
    assert torch.equal(again.feature_mean, params.feature_mean)


def test_the_cli_refuses_teaching_on_an_open_address_without_a_token(monkeypatch, capsys):
    monkeypatch.delenv("QDM_TEACH_TOKEN", raising=False)
    assert main(["serve", "--teach", "--host", "0.0.0.0", "--browser-model", "none"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--teach-token" in error and "0.0.0.0" in error and "\n" not in error
    assert main(["serve", "--teach-token", "x", "--browser-model", "none"]) == 2
    for host in ("127.0.0.1", "::1", "localhost"):
        assert teach_token_for(host, True, None) is None
    assert teach_token_for("0.0.0.0", True, "abc") == "abc"
    monkeypatch.setenv("QDM_TEACH_TOKEN", "from-env")
    assert teach_token_for("192.168.1.20", True, None) == "from-env"
    assert teach_token_for("127.0.0.1", False, None) is None
    monkeypatch.setenv("XDG_CACHE_HOME", "/cache")
    folder = default_teach_dir("default")
    assert folder.parent == Path("/cache/quickdraw-mobile/taught") and len(folder.name) == 16


def test_the_browser_model_names_its_features_output_when_its_metadata_has_one(monkeypatch, served_model, tmp_path):
    metadata = {"artifact": {"bytes": 10, "sha256": "ab", "quant": "int8"}, "input": {"name": "input"},
                "output": {"name": "logits"}}
    monkeypatch.setattr("quickdraw_mobile.export.read_metadata", lambda path: (metadata, served_model.labels))
    assert "features" not in browser_model_info(tmp_path / "m.onnx", served_model.labels)
    metadata["features"] = {"name": "features", "shape": ["batch", 128]}
    assert browser_model_info(tmp_path / "m.onnx", served_model.labels)["features"] == "features"
