"""The `efr serve` application: a page at ``/`` and an HTTP API over one loaded Predictor.

    GET  /          the page (efr.serve.page): drop photos or use the webcam
    POST /predict   multipart field ``files`` (one or more images) -> faces, boxes, labels, probabilities
    GET  /health    {"status": "ok", ...}
    GET  /model     the model's name, classes, input size, runtime, test accuracy and the limits
    GET  /docs      OpenAPI documentation (/openapi.json)

Faces are found in worker threads (``workers`` at a time, efr.predict.predictor.Predictor.locate
and .crops, as `efr predict` finds them) and classified by one model thread that batches
requests together (efr.serve.batching).  Limits (efr.serve.limits) are checked in memory; a
refusal is a 4xx ``{"error": "..."}`` and the server keeps serving.  With a ``token`` every
request must carry it (``Authorization: Bearer T``, ``X-EFR-Token: T``, ``?token=T`` or the
cookie the page gets after ``?token=T``).
"""

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from efr.serve.batching import Batcher, Busy, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_MAX_WAIT_MS
from efr.serve.limits import FIELD, Limits, UploadError, check_length, decode_upload, parse_multipart, too_large

log = logging.getLogger("efr.serve")

TOKEN_HEADER = "x-efr-token"
TOKEN_COOKIE = "efr_token"


def test_accuracy(predictor):
    """(accuracy, where it was measured) for the model: its run's metrics.json, else its own metadata."""
    path = Path(predictor.model_path)
    metrics = path.parent / "metrics.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        value = json.loads(metrics.read_text()).get("test_accuracy")
        if isinstance(value, (int, float)):
            return float(value), "the training run's Test split (metrics.json)"
    public = predictor.meta.get("publictest")
    if isinstance(public, dict) and isinstance(public.get("accuracy"), (int, float)):
        return float(public["accuracy"]), f"{(predictor.meta.get('dataset') or {}).get('name', 'FER2013')} PublicTest"
    return None, None


def describe_model(predictor, limits):
    """What GET /model answers (and the page shows)."""
    accuracy, measured_on = test_accuracy(predictor)
    path = Path(predictor.model_path)
    return {
        "name": predictor.meta.get("model") or path.stem,
        "file": path.name,
        "classes": list(predictor.class_names),
        "input_size": list(predictor.image_size),
        "runtime": predictor.runtime,
        "tta": predictor.tta,
        "test_accuracy": accuracy,
        "test_accuracy_on": measured_on,
        "limits": limits.describe(),
    }


def _faces(predictor, boxes, probs):
    out = []
    for box, p in zip(boxes, probs):
        best = int(p.argmax())
        out.append({"box": [int(v) for v in box], "label": predictor.class_names[best],
                    "confidence": round(float(p[best]), 6),
                    "probabilities": {n: round(float(v), 6) for n, v in zip(predictor.class_names, p)}})
    return out


class Service:
    """The work behind the routes: decode and detect in threads, classify in the batcher."""

    def __init__(self, predictor, limits, workers, max_batch, max_wait_ms, max_queue):
        import anyio

        self.predictor = predictor
        self.limits = limits.check()
        self.batcher = Batcher(predictor.classify, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue)
        self.limiter = anyio.CapacityLimiter(max(1, int(workers or os.cpu_count() or 1)))
        self.started = time.time()
        self.requests = 0
        self.images = 0
        self.refused = 0

    def find(self, name, data):
        """In a worker thread: (image size, boxes, crops, seconds) for one upload, or an UploadError."""
        started = time.perf_counter()
        image = decode_upload(name, data, self.limits)
        boxes = self.predictor.locate(image)
        crops = self.predictor.crops(image, boxes)
        return (image.shape[1], image.shape[0]), boxes, crops, time.perf_counter() - started

    async def read_body(self, request):
        check_length(request.headers.get("content-length"), self.limits)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limits.max_upload_bytes:
                raise too_large(self.limits)
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(self, request):
        import anyio

        started = time.perf_counter()
        body = await self.read_body(request)
        parts = parse_multipart(body, request.headers.get("content-type"), self.limits)
        del body
        found = await asyncio.gather(*[
            anyio.to_thread.run_sync(self.find, name, data, limiter=self.limiter) for name, data in parts])
        crops = [c for _, _, cs, _ in found for c in cs]
        try:
            future = self.batcher.submit(crops)
        except Busy as err:
            raise UploadError(503, f"the server is busy ({err}); retry in a moment") from None
        probs, waited, classifying = await asyncio.wrap_future(future)
        images, start = [], 0
        for (name, _), (size, boxes, cs, _) in zip(parts, found):
            n = len(cs)
            images.append({"name": name, "width": size[0], "height": size[1],
                           "faces": _faces(self.predictor, boxes, probs[start : start + n] if n else [])})
            start += n
        self.requests += 1
        self.images += len(images)
        return {
            "images": images,
            "timing_ms": {"detect": round(1000 * sum(f[3] for f in found), 2), "queue": round(1000 * waited, 2),
                          "classify": round(1000 * classifying, 2),
                          "total": round(1000 * (time.perf_counter() - started), 2)},
        }


def _error(status, message, headers=None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _given_token(request):
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    for value, from_query in ((request.headers.get(TOKEN_HEADER), False), (request.query_params.get("token"), True),
                              (request.cookies.get(TOKEN_COOKIE), False)):
        if value:
            return value, from_query
    return None, False


PREDICT_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FIELD],
    "properties": {FIELD: {"type": "array", "items": {"type": "string", "format": "binary"},
                           "description": "one or more photos (jpg, png, bmp, tif, webp)"}}}}}}}


def create_app(predictor, limits=None, token=None, workers=None, max_batch=DEFAULT_MAX_BATCH,
               max_wait_ms=DEFAULT_MAX_WAIT_MS, max_queue=DEFAULT_MAX_QUEUE):
    """The FastAPI app serving ``predictor`` (efr.predict.predictor.Predictor); ``app.state.service`` holds the rest."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse

    from efr import __version__
    from efr.serve.page import PAGE

    service = Service(predictor, limits or Limits(), workers, max_batch, max_wait_ms, max_queue)
    info = describe_model(predictor, service.limits)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        service.batcher.close()

    app = FastAPI(title="EFR", version=__version__, lifespan=lifespan,
                  description="Facial-expression recognition: the emotion of every face in a photo. "
                  f"Model: {info['name']} ({', '.join(info['classes'])}).")
    app.state.service = service

    @app.middleware("http")
    async def guard(request, call_next):
        if token is not None:
            given, from_query = _given_token(request)
            if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                service.refused += 1
                return _error(401, "this server needs its token: send 'Authorization: Bearer TOKEN', "
                                   f"'X-EFR-Token: TOKEN' or open {request.url.path}?token=TOKEN",
                              headers={"WWW-Authenticate": "Bearer"})
            response = await call_next(request)
            if from_query:  # the page and /docs then work without the token in every URL
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        return await call_next(request)

    @app.exception_handler(UploadError)
    async def refused(_request, err):
        service.refused += 1
        return _error(err.status, err.message, headers={"Retry-After": "1"} if err.status == 503 else None)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    @app.get("/health", summary="Whether the server is up, and its counts")
    def health():
        return {"status": "ok", "uptime_s": round(time.time() - service.started, 1), "requests": service.requests,
                "images": service.images, "refused": service.refused, "queued": service.batcher.waiting,
                "model_calls": service.batcher.batches, "faces": service.batcher.faces}

    @app.get("/model", summary="The model: name, classes, input size, runtime, test accuracy; the limits")
    def model():
        return info

    @app.post("/predict", summary="The emotion of every face in one or more photos", openapi_extra=PREDICT_BODY,
              responses={400: {"description": "not a multipart form with files"},
                         401: {"description": "missing or wrong token"},
                         413: {"description": "too large: bytes, pixels or number of images"},
                         415: {"description": "not an image"}, 422: {"description": "a damaged image"},
                         503: {"description": "busy: retry"}})
    async def predict(request: Request):
        """Per image: its faces (box x, y, width, height in pixels; label; confidence; a probability per class),
        and the request's timing in milliseconds.  An image without a face has an empty ``faces``."""
        return await service.predict(request)

    return app


def is_loopback(host):
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bound_socket(host, port):
    """A listening-ready socket bound to (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    return sock


def uvicorn_server(app, log_level="warning"):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                                         timeout_graceful_shutdown=2))


@contextlib.contextmanager
def running_server(app, host="127.0.0.1", port=0):
    """Serve ``app`` on a background thread; yield its base URL (tests and the benchmark)."""
    sock = bound_socket(host, port)
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        bound = sock.getsockname()
        yield f"http://{host}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
