"""The prediction service and the drawing page: one FastAPI app around one eager model.

``POST /predict`` takes strokes (official simplified or raw format) or a base64 PNG and answers the top
classes; ``GET /classes``, ``/health`` and ``/model`` describe the service; ``GET /`` is the drawing page
(``static/``), which can also run an INT8 ONNX copy of the model in the browser (``GET /model.onnx``).
OpenAPI docs are at ``/docs``. With a teach folder (``qdm serve --teach``), ``POST /classes`` teaches a new class
from a few drawings and ``DELETE /classes/{name}`` forgets one (``taught.py``); taught classes are predicted
like the model's own.

Every bad request gets a 4xx with a one-line ``detail``: schema errors from the request model, content
errors (``QDMError``) from the renderer and the PNG decoder, 413 past ``MAX_BODY_BYTES``. Inference runs
on one long-lived thread of its own: one forward pass at a time uses all intra-op threads, and concurrent
requests still prepare their bitmaps in parallel on the server's worker threads. Not on those workers: they
come and go (AnyIO retires a worker after 10 s idle), and each new thread that runs the model leaves memory
behind (PyTorch's per-thread state, its own OpenMP team and malloc arena), so the server's memory grew with
every burst of requests after a pause (``benchmarks/bench_serve_soak.py``).
"""

from __future__ import annotations

import hmac
import mimetypes
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import __version__
from ..data.classes import all_classes
from ..data.loader import normalize
from ..data.render import FORMATS, RENDERER_VERSION, SIDE
from ..errors import QDMError
from ..extend import forward_with_features
from ..inference import softmax_for_pixels
from ..modelref import LoadedModel, describe_model, load_model
from ..predict import top_k
from ..teach import (
    MAX_NAME_LENGTH,
    MAX_TAUGHT_CLASSES,
    MAX_TEACH_DRAWINGS,
    MIN_TEACH_DRAWINGS,
    NotTaught,
    TeachConflict,
    TeachParameters,
    model_class_origins,
    taught_logits,
    teach_parameters,
)
from .preprocess import (
    MAX_ABS_COORDINATE,
    MAX_ABS_TIME,
    MAX_BODY_BYTES,
    MAX_IMAGE_SIDE,
    MAX_PATH_LENGTH,
    MAX_POINTS,
    MAX_STROKE_POINTS,
    MAX_STROKES,
    bitmap_from_drawing,
    bitmap_from_png,
)
from .taught import Snapshot, TaughtClasses

STATIC = Path(__file__).parent / "static"
DEFAULT_TOP_K = 5
NO_CACHE = {"Cache-Control": "no-cache"}  # the page and its service worker: always revalidated

# Browsers refuse ES modules and streamed WebAssembly served under another type.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")

# ----------------------------------------------------------------------------------------------- schema
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Stroke = Annotated[
    list[Annotated[list[Number], Field(max_length=MAX_STROKE_POINTS)]],
    Field(min_length=2, max_length=3, description="[[x...], [y...]] or, raw, [[x...], [y...], [t...]]"),
]
Drawing = Annotated[list[Stroke], Field(max_length=MAX_STROKES)]
StrokeFormat = Literal[FORMATS]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"drawing": [[[10, 120, 250], [20, 240, 30]]], "format": "simplified"},
        {"drawing": [[[412.5, 380.25, 301.0], [87.5, 160.0, 222.75], [0, 16, 33]]], "format": "raw"},
        {"image": "iVBORw0KGgo...", "return_bitmap": True},
    ]})

    drawing: Drawing | None = Field(
        None, description=f"strokes; at most {MAX_STROKES} strokes, {MAX_STROKE_POINTS} points each, "
        f"{MAX_POINTS} in all; raw |x|, |y| <= {MAX_ABS_COORDINATE:g}, |t| <= {MAX_ABS_TIME:g}; at most "
        f"{MAX_PATH_LENGTH} units of stroke length with the drawing's long side scaled to 255")
    format: StrokeFormat = Field(
        "auto", description="simplified (integers 0..255), raw (screen pixels, simplified like the official "
        "data) or auto (raw if any stroke has times or leaves 0..255)")
    image: str | None = Field(
        None, description=f"base64 PNG (or a data:image/png;base64 URL), at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}; "
        "its ink is cropped, scaled and centred like the official bitmaps")
    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=len(all_classes()), description="number of classes answered")
    return_bitmap: bool = Field(False, description="also answer the 28x28 bitmap the model saw")

    @model_validator(mode="after")
    def _one_input(self) -> PredictRequest:
        if (self.drawing is None) == (self.image is None):
            raise ValueError("give exactly one of 'drawing' (strokes) or 'image' (base64 PNG)")
        return self


class ClassProb(BaseModel):
    class_: str = Field(alias="class")
    prob: float


class PredictResponse(BaseModel):
    top: list[ClassProb]
    bitmap: list[list[int]] | None = Field(None, description="28 rows of 28 uint8 values, ink 255 on 0")


class TeachRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"name": "zigzag", "format": "simplified", "drawings": [
            [[[0, 60, 120, 180, 250], [200, 40, 200, 40, 200]]], [[[0, 50, 100, 150, 200], [150, 20, 150, 20, 150]]],
            [[[10, 70, 130, 190, 250], [220, 60, 220, 60, 220]]]]},
    ]})

    name: str = Field(description=f"the new class: 1..{MAX_NAME_LENGTH} letters, digits, spaces, - _ ' "
                      "(stripped); not a name the model knows (in any case)")
    drawings: list[Drawing] = Field(min_length=MIN_TEACH_DRAWINGS, max_length=MAX_TEACH_DRAWINGS,
                                    description="drawings of it, each a stroke list as POST /predict takes")
    format: StrokeFormat = Field("auto", description="the drawings' stroke format, as POST /predict takes")


class TeachResponse(BaseModel):
    name: str
    drawings: int
    classes: int = Field(description="the number of classes now, taught ones included")


class DeleteResponse(BaseModel):
    deleted: str
    classes: int


# ------------------------------------------------------------------------------------------------- model
class Predictor:
    """The eager model on one thread of its own, the taught classes (with a teach folder), and what
    ``GET /model`` reports."""

    def __init__(self, loaded: LoadedModel, browser_model: Path | None = None, teach_dir: Path | None = None,
                 teach_token: str | None = None):
        self.loaded = loaded
        self.model = loaded.model
        self.labels = loaded.labels
        # One worker: forward passes run one at a time, always on the same thread (started on first use).
        self.runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdm-model")
        self.browser_model = browser_model
        self.origins = model_class_origins(loaded)
        self.teach_token = teach_token
        self.taught = TaughtClasses(self.teach_parameters(), loaded.labels, teach_dir, self.features) \
            if teach_dir is not None else None
        model = describe_model(loaded)  # not its "source": the server's paths are not the page's business
        self.metadata = {
            "name": model["name"],
            "options": model["options"],
            "run": loaded.run.root.name,
            "params": model["params"],
            "macs": model["macs"],
            "classes": len(loaded.labels),
            "input": {"shape": [1, 1, SIDE, SIDE], "pixels": "uint8 ink 255 on 0, normalized as (p/255 - 0.5)/0.5"},
            "renderer": RENDERER_VERSION,
            "version": __version__,
            "browser_model": browser_model_info(browser_model, loaded.labels) if browser_model else None,
            "limits": {"body_bytes": MAX_BODY_BYTES, "strokes": MAX_STROKES, "stroke_points": MAX_STROKE_POINTS,
                       "points": MAX_POINTS, "abs_coordinate": MAX_ABS_COORDINATE, "abs_time": MAX_ABS_TIME,
                       "path_length": MAX_PATH_LENGTH, "image_side": MAX_IMAGE_SIDE},
        }

    def predict(self, pixels: np.ndarray, k: int) -> list[dict]:
        taught = self.taught.snapshot if self.taught is not None else None  # one snapshot for the whole answer
        if not taught or not taught.names:
            probs = self.runner.submit(softmax_for_pixels, self.model, pixels.reshape(1, -1)).result()
            return top_k(probs, self.labels, k)[0]["top"]
        probs = self.runner.submit(self._probabilities_with, taught, pixels.reshape(1, -1)).result()
        return top_k(probs, [*self.labels, *taught.names], k)[0]["top"]

    @torch.inference_mode()
    def _probabilities_with(self, taught: Snapshot, pixels: np.ndarray) -> np.ndarray:
        """Softmax over the model's logits and the taught classes' after them, from one forward pass."""
        features, logits = forward_with_features(self.model, normalize(pixels))
        logits = torch.cat([logits, taught_logits(features, taught.prototypes, self.taught.params)], dim=1)
        return torch.softmax(logits, dim=1).numpy()

    def features(self, pixels: np.ndarray) -> torch.Tensor:
        """The model's pooled features (N, D) of bitmaps (N, 784), computed on the model's thread."""
        return self.runner.submit(lambda: forward_with_features(self.model, normalize(pixels))[0]).result()

    def teach_parameters(self) -> TeachParameters:
        """The taught classes' feature mean, scale and offset (``teach.teach_parameters``: fitted once per
        model), on the model's thread."""
        return self.runner.submit(teach_parameters, self.loaded).result()

    def class_count(self) -> int:
        return len(self.labels) + (len(self.taught.snapshot.names) if self.taught is not None else 0)

    def teach_info(self) -> dict:
        """``GET /model``'s "teach": whether this server takes new classes, its limits, and the parameters a
        client needs to compute taught classes' logits itself (null, with the reason, for a model without)."""
        info = {"enabled": self.taught is not None, "token_required": self.teach_token is not None,
                "min_drawings": MIN_TEACH_DRAWINGS, "max_drawings": MAX_TEACH_DRAWINGS,
                "max_classes": MAX_TAUGHT_CLASSES}
        try:
            return {**info, **self.teach_parameters().to_json()}
        except QDMError as exc:
            return {**info, "feature_mean": None, "scale": None, "offset": None, "unavailable": str(exc)}

    def class_list(self) -> dict:
        """``GET /classes``: names in output order, each with where it comes from."""
        taught = self.taught.snapshot if self.taught is not None else Snapshot((), torch.zeros(0), ())
        origins = [*self.origins, *({"name": name, "origin": "taught", "drawings": count}
                                    for name, count in zip(taught.names, taught.drawings, strict=True))]
        return {"classes": [o["name"] for o in origins], "origins": origins}


def browser_model_info(path: Path, labels: list[str]) -> dict:
    """What the page needs to run an exported ONNX model (checked against its sidecars and ``labels``)."""
    from ..export import read_metadata

    if path.suffix != ".onnx":
        raise QDMError(f"{path}: the browser model must be an .onnx made by 'qdm export --format onnx'")
    metadata, artifact_labels = read_metadata(path)
    if artifact_labels != labels:
        raise QDMError(f"{path}: its {len(artifact_labels)} classes differ from the served model's {len(labels)}")
    info = {
        "url": "/model.onnx",
        "bytes": metadata["artifact"]["bytes"],
        "sha256": metadata["artifact"]["sha256"],
        "quant": metadata["artifact"]["quant"],
        "input": metadata["input"]["name"],  # float32 (1, 1, 28, 28), normalized like the server's input
        "output": metadata["output"]["name"],  # logits
    }
    features = metadata.get("features")  # a second output, the pooled features, in exports that have one
    name = features.get("name") if isinstance(features, dict) else features
    if isinstance(name, str) and name:
        info["features"] = name
    return info


# --------------------------------------------------------------------------------------------------- app
class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` (declared or streamed) gets a 413 JSON answer.

    The body is read here, at most ``max_bytes`` of it, and handed on in one piece.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = JSONResponse({"detail": f"body: larger than {self.max_bytes} bytes"}, status_code=413)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await too_large(scope, receive, send)
            if not message.get("more_body"):
                break
        first = True

        async def replay():
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        return await self.app(scope, replay, send)


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line and at most ``limit`` characters (it may quote the client's own input)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _validation_detail(exc: RequestValidationError) -> tuple[int, str]:
    """A validation error as (status, detail): 400 for broken JSON, 422 for the rest."""
    error = exc.errors()[0]
    if error["type"] == "json_invalid":
        return 400, f"body: not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})"
    parts = [part for part in error["loc"][1:] if not str(part).startswith("function-")]
    where = ".".join(part if isinstance(part, str) and part.isidentifier() else repr(part)[:40] for part in parts)
    message = error["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    return 422, _one_line(f"{where or 'body'}: {message}" + (f" (and {more} more problems)" if more else ""))


def create_app(model: str | Path | LoadedModel = "default", browser_model: str | Path | None = None,
               teach_dir: str | Path | None = None, teach_token: str | None = None) -> FastAPI:
    """The service for ``model`` (a run folder, ``default`` or an already loaded model).

    ``browser_model`` is an .onnx exported from the same model by ``qdm export`` (with its sidecar files),
    which the page may download and run itself; without it the page only predicts through the server.
    ``teach_dir``: the folder of the taught classes (read now); teaching is off without it. ``teach_token``:
    the bearer token teaching requests must carry (none needed without it).
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    browser_model = Path(browser_model) if browser_model else None
    predictor = Predictor(loaded, browser_model, Path(teach_dir) if teach_dir is not None else None, teach_token)

    app = FastAPI(title="QuickDraw Mobile", version=__version__,
                  description="Classify Quick, Draw! doodles from strokes or a PNG. The drawing page is at /.")
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.state.predictor = predictor

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, detail = _validation_detail(exc)
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(QDMError)
    async def _invalid_content(request: Request, exc: QDMError) -> JSONResponse:
        status = 409 if isinstance(exc, TeachConflict) else 404 if isinstance(exc, NotTaught) else 422
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=status)

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
              responses={400: {"description": "not JSON"}, 413: {"description": "body too large"},
                         422: {"description": "invalid drawing or image"}})
    def predict(request: PredictRequest) -> dict:
        """Top classes for one drawing: strokes rendered like the training data, or a PNG framed like it."""
        if request.drawing is not None:
            pixels = bitmap_from_drawing(request.drawing, request.format)
        else:
            pixels = bitmap_from_png(request.image)
        answer = {"top": predictor.predict(pixels, request.top_k)}
        if request.return_bitmap:
            answer["bitmap"] = pixels.reshape(SIDE, SIDE).tolist()
        return answer

    @app.get("/classes")
    def classes() -> dict:
        """The class names in output order (taught ones last), and where each comes from: "trained", "extended"
        (``qdm extend``) or "taught" (``POST /classes``), with the drawings it was made from (null if trained)."""
        return predictor.class_list()

    add_teach_routes(app, predictor)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    def model_info() -> dict:
        """The model: architecture, size, classes, input contract, limits, the browser copy if any, and teaching."""
        return {**predictor.metadata, "teach": predictor.teach_info()}

    @app.get("/model.onnx", response_class=FileResponse, responses={404: {"description": "no browser model"}})
    def onnx_model():
        """The INT8 ONNX model the page runs in the browser (404 when the server has none)."""
        if predictor.browser_model is None:
            return JSONResponse({"detail": "this server has no browser model (see 'qdm serve --help')"}, 404)
        return FileResponse(predictor.browser_model, media_type="application/octet-stream", headers=NO_CACHE)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=NO_CACHE)

    @app.get("/sw.js", include_in_schema=False)
    def service_worker() -> FileResponse:  # served from / so that it may control the whole page
        return FileResponse(STATIC / "sw.js", media_type="text/javascript", headers=NO_CACHE)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def authorized_teaching(request: Request, authorization: Annotated[str | None, Header()] = None) -> TaughtClasses:
    """The taught classes, for a request that may change them: 403 when teaching is off, 401 without the
    server's token (when it has one)."""
    predictor: Predictor = request.app.state.predictor
    if predictor.taught is None:
        raise HTTPException(403, "teaching is off on this server; start it with 'qdm serve --teach'")
    if predictor.teach_token is not None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 predictor.teach_token.encode()):
            raise HTTPException(401, "Authorization: expected 'Bearer <token>' with this server's teach token",
                                headers={"WWW-Authenticate": "Bearer"})
    return predictor.taught


Teaching = Annotated[TaughtClasses, Depends(authorized_teaching)]


def add_teach_routes(app: FastAPI, predictor: Predictor) -> None:
    """``POST /classes`` and ``DELETE /classes/{name}``."""
    refusals = {401: {"description": "teach token missing or wrong"}, 403: {"description": "teaching is off"},
                409: {"description": "a name the model knows, or no room for another class"}}

    @app.post("/classes", status_code=201, response_model=TeachResponse,
              responses={**refusals, 422: {"description": "bad name, too few or too many drawings, a bad drawing"}})
    def teach(request: TeachRequest, taught: Teaching) -> dict:
        """Teach a new class from a few drawings; it is predicted from now on (and after a restart)."""
        added = taught.add(request.name, request.drawings, request.format)
        return {"name": added.name, "drawings": len(added.drawings), "classes": predictor.class_count()}

    @app.delete("/classes/{name}", response_model=DeleteResponse,
                responses={**refusals, 404: {"description": "no taught class of that name"}})
    def forget(name: str, taught: Teaching) -> dict:
        """Forget a taught class (the model's own classes stay)."""
        return {"deleted": taught.delete(name), "classes": predictor.class_count()}
