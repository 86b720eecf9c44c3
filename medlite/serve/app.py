"""The web page's server: one FastAPI app, ONNX Runtime only (no torch), images held in memory.

Routes (JSON unless said otherwise; every ``/api`` route but ``info`` and ``image`` needs the ``X-Session``
header that ``POST /api/image`` returns):

- ``GET /``: the page; ``GET /static/<file>``: its script and style sheet (Starlette's static files,
  which refuse paths outside the folder).
- ``GET /api/info``: the promptable model, the classifiers, the upload cap.
- ``POST /api/image``: the raw file as the request body (``X-Filename`` header: the file's name, shown
  in messages only). Read from memory by content (PNG, JPEG, BMP, TIFF, DICOM, NIfTI; the DICOM window
  applied), encoded once -> ``{session, width, height, kind, encoder_ms, preview}``.
- ``POST /api/segment``: ``{object, box, points, strokes}`` in image pixels -> the object's probability map
  as an 8-bit PNG (the page thresholds it as the slider says), predicted IoU, decoder ms.
- ``DELETE /api/objects/<n>``: forget object n.
- ``GET /api/download/<file>?threshold=t``: ``mask.png`` (0/255, all objects), ``labels.png`` (object i ->
  label i), ``labels.nii.gz`` (medical inputs), ``overlay.png``.
- ``POST /api/classify``: ``{model}`` -> class probabilities and the attention heat map overlay.

Safety: the body of an upload is read up to the cap and refused past it (413); only content that a
reader recognises is decoded (415 otherwise); the client never names a file on this machine; sessions
are 128-bit random tokens, one image each, the oldest dropped past ``max_sessions``; nothing is written
to disk (no multipart spooling: the upload is the raw body); a Host check refuses requests whose Host is
not this server's (DNS rebinding); responses carry a strict Content-Security-Policy.
"""

from __future__ import annotations

import base64
import io
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageDraw
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from medlite.data.io import ImageReadError, read_image_bytes, sniff_kind, to_rgb8
from medlite.export.sam_runtime import OnnxSamPredictor

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DOWNLOADS = ("mask.png", "labels.png", "labels.nii.gz", "overlay.png")
COLOURS = np.array([[255, 64, 64], [64, 160, 255], [80, 220, 120], [255, 200, 40], [200, 90, 255],
                    [255, 130, 200], [60, 220, 220], [255, 150, 60]], np.float32)
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


class Stroke(BaseModel):
    points: list[tuple[float, float]] = Field(min_length=1, max_length=4000)
    label: Literal[0, 1] = 1


class SegmentRequest(BaseModel):
    object: int = Field(0, ge=0, le=254)
    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float, Literal[0, 1]]] = Field(default_factory=list, max_length=64)
    strokes: list[Stroke] = Field(default_factory=list, max_length=64)


class ClassifyRequest(BaseModel):
    model: str = Field(max_length=200)


@dataclass
class ImageSession:
    """One uploaded image and what was computed from it (kept in memory only)."""

    name: str
    kind: str
    image01: np.ndarray  # (H, W) or (H, W, 3) float32 in [0, 1], as medlite's readers give
    rgb: np.ndarray  # (H, W, 3) uint8, what the page shows and the models see
    features: list[np.ndarray]
    geometry: object
    objects: dict[int, np.ndarray] = field(default_factory=dict)  # object -> (H, W) float32 probabilities


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_url(a: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(a)).decode()


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) float32 RGB, dark blue -> cyan -> yellow -> red."""
    stops = np.array([0.0, 0.35, 0.65, 1.0])
    rgb = np.array([[20, 30, 140], [40, 200, 230], [250, 230, 60], [230, 30, 30]], np.float32)
    return np.stack([np.interp(heat, stops, rgb[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def rasterise(strokes: list[Stroke], height: int, width: int) -> np.ndarray | None:
    """Scribble strokes (polylines in image pixels) -> (H, W) float32 map: +1 foreground, -1 background."""
    if not strokes:
        return None
    out = np.zeros((height, width), np.float32)
    for sign in (1, 0):
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for s in (s for s in strokes if s.label == sign):
            pts = [(float(x), float(y)) for x, y in s.points]
            draw.line(pts if len(pts) > 1 else pts * 2, fill=255, width=max(3, round(max(height, width) / 150)))
        out[np.asarray(canvas) > 0] = 1.0 if sign else -1.0
    return out


class Server:
    """The models and the sessions behind the routes (one promptable model, any number of classifiers)."""

    def __init__(self, sam: str | Path, classifiers: dict[str, Path] | None = None, threads: int = 1,
                 max_upload_mb: float = 64.0, max_sessions: int = 16, sam_name: str | None = None) -> None:
        self.sam = OnnxSamPredictor(sam, threads)
        self.sam_name = sam_name or self.sam.name  # what the page calls it (a zoo name, or the architecture)
        self.classifier_files = dict(classifiers or {})
        self.threads = threads
        self.max_upload = int(max_upload_mb * 2**20)
        self.max_sessions = max_sessions
        self.sessions: OrderedDict[str, ImageSession] = OrderedDict()
        self._classifiers: dict = {}
        self.lock = threading.Lock()  # the predictor's cached features are per call: one prompt at a time
        self.timings: dict[str, list[float]] = {"encoder_ms": [], "decoder_ms": []}  # server side, for benchmarks

    # ------------------------------------------------------------------ sessions
    def session(self, token: str | None) -> ImageSession:
        s = self.sessions.get(token or "")
        if s is None:
            raise HTTPException(404, "no image in this session (open one first; sessions end when the server "
                                     "restarts or after newer ones)")
        self.sessions.move_to_end(token)
        return s

    def open_image(self, data: bytes, name: str) -> tuple[str, ImageSession, float]:
        kind = sniff_kind(data)
        try:
            img = read_image_bytes(data, name)
        except ImageReadError as e:
            raise HTTPException(415 if kind is None else 422, str(e)) from e
        rgb = to_rgb8(img)
        with self.lock:
            t0 = time.perf_counter()
            self.sam.set_image(rgb)
            ms = 1000 * (time.perf_counter() - t0)
            self.timings["encoder_ms"].append(ms)
            s = ImageSession(Path(name).name, "nifti" if kind == "gzip" else kind, img, rgb, self.sam.features,
                             self.sam.geometry)
            self.sam.reset_image()
        token = secrets.token_urlsafe(16)
        self.sessions[token] = s
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)
        return token, s, ms

    # ------------------------------------------------------------------ segmentation
    def segment(self, s: ImageSession, req: SegmentRequest) -> tuple[np.ndarray, float, float]:
        h, w = s.rgb.shape[:2]
        scribble = rasterise(req.strokes, h, w)
        pts = [p[:2] for p in req.points] or None
        labels = [p[2] for p in req.points] or None
        with self.lock:
            t0 = time.perf_counter()
            self.sam.features, self.sam.geometry = s.features, s.geometry
            try:
                prob, iou = self.sam.segment(box=req.box, points=pts, point_labels=labels, scribble=scribble,
                                             return_probs=True)
            except ValueError as e:
                raise HTTPException(422, str(e)) from e
            finally:
                self.sam.reset_image()
            ms = 1000 * (time.perf_counter() - t0)
            self.timings["decoder_ms"].append(ms)
        s.objects[req.object] = prob
        return prob, iou, ms

    def labels(self, s: ImageSession, threshold: float) -> np.ndarray:
        """(H, W) uint8 label map: object k (in order of their numbers) -> k + 1; later objects win overlaps."""
        out = np.zeros(s.rgb.shape[:2], np.uint8)
        for k, oid in enumerate(sorted(s.objects)):
            out[s.objects[oid] > threshold] = k + 1
        return out

    def overlay(self, s: ImageSession, labels: np.ndarray) -> np.ndarray:
        rgb = s.rgb.astype(np.float32)
        for k in range(1, int(labels.max()) + 1):
            m = labels == k
            rgb[m] = 0.55 * rgb[m] + 0.45 * COLOURS[(k - 1) % len(COLOURS)]
        return rgb.astype(np.uint8)

    # ------------------------------------------------------------------ classification
    def classifier(self, name: str):
        from medlite.export.runtime import OnnxClassifier

        if name not in self.classifier_files:
            raise HTTPException(404, f"unknown classifier {name!r}; this server has: "
                                     f"{', '.join(self.classifier_files) or 'none'}")
        if name not in self._classifiers:
            self._classifiers[name] = OnnxClassifier(self.classifier_files[name], threads=self.threads)
        return self._classifiers[name]

    def classify(self, s: ImageSession, name: str) -> dict:
        clf = self.classifier(name)
        t0 = time.perf_counter()
        x = clf.preprocess(s.image01)
        heat = None
        if clf.has_heatmap:
            probs, heat = clf.explain(x)
        else:
            probs = clf.predict_array(x)
        ms = 1000 * (time.perf_counter() - t0)
        from medlite.export.runtime import describe

        out = {"model": name, "ms": ms, **describe(probs, clf.task, clf.label_names)[0], "heatmap": None}
        if heat is not None:
            h, w = s.rgb.shape[:2]
            big = np.asarray(Image.fromarray(heat[0].astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR))
            blend = 0.5 * s.rgb.astype(np.float32) + 0.5 * heat_colours(np.clip(big, 0, 1))
            out["heatmap"] = data_url(blend.astype(np.uint8))
        return out


def _nifti_bytes(labels: np.ndarray) -> bytes:
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(labels[:, :, None].astype(np.uint8), np.eye(4))
    return gzip.compress(img.to_bytes(), compresslevel=6)


def create_app(server: Server, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The FastAPI app around ``server``. ``allowed_hosts``: Host header values accepted (default: the
    loopback names, so a page on another site cannot reach this server by DNS rebinding)."""
    app = FastAPI(title="medlite serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware,
                       allowed_hosts=allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "::1"])

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> dict:
        return {"sam": server.sam_name, "classifiers": list(server.classifier_files),
                "max_upload_mb": server.max_upload / 2**20, "threads": server.threads}

    @app.post("/api/image")
    async def image(request: Request, x_filename: str = Header("upload", max_length=255)) -> dict:
        declared = request.headers.get("content-length")
        cap = server.max_upload
        too_big = f"{x_filename}: larger than the {cap / 2**20:g} MB upload limit (medlite serve --max-upload-mb)"
        if declared and declared.isdigit() and int(declared) > cap:
            raise HTTPException(413, too_big)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                raise HTTPException(413, too_big)
        token, s, ms = await run_in_threadpool(server.open_image, bytes(body), unquote(x_filename))
        h, w = s.rgb.shape[:2]
        return {"session": token, "name": s.name, "width": w, "height": h, "kind": s.kind, "encoder_ms": ms,
                "preview": data_url(s.rgb), "medical": s.kind in ("dicom", "nifti")}

    @app.post("/api/segment")
    def segment(req: SegmentRequest, x_session: str = Header("")) -> dict:
        s = server.session(x_session)
        prob, iou, ms = server.segment(s, req)
        return {"object": req.object, "iou": iou, "ms": ms, "area_px": int((prob > 0.5).sum()),
                "prob": data_url(np.round(prob * 255).astype(np.uint8))}

    @app.delete("/api/objects/{oid}")
    def forget(oid: int, x_session: str = Header("")) -> dict:
        s = server.session(x_session)
        s.objects.pop(oid, None)
        return {"objects": sorted(s.objects)}

    @app.get("/api/download/{what}")
    def download(what: str, threshold: float = Query(0.5, gt=0.0, lt=1.0), x_session: str = Header("")):
        if what not in DOWNLOADS:
            raise HTTPException(404, f"nothing to download as {what!r}; one of {', '.join(DOWNLOADS)}")
        s = server.session(x_session)
        if not s.objects:
            raise HTTPException(409, "no mask yet: draw a box or click on the image first")
        labels = server.labels(s, threshold)
        stem = Path(s.name).name.split(".")[0] or "image"
        if what == "mask.png":
            body, kind = png_bytes(((labels > 0) * 255).astype(np.uint8)), "image/png"
        elif what == "labels.png":
            body, kind = png_bytes(labels), "image/png"
        elif what == "overlay.png":
            body, kind = png_bytes(server.overlay(s, labels)), "image/png"
        else:
            if s.kind not in ("dicom", "nifti"):
                raise HTTPException(409, "a NIfTI label map is offered for DICOM and NIfTI images")
            body, kind = _nifti_bytes(labels), "application/gzip"
        return Response(body, media_type=kind,
                        headers={"Content-Disposition": f'attachment; filename="{stem}_{what}"'})

    @app.post("/api/classify")
    def classify(req: ClassifyRequest, x_session: str = Header("")) -> dict:
        return server.classify(server.session(x_session), req.model)

    @app.exception_handler(StarletteHTTPException)
    async def _error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    return app
