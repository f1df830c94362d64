"""efr serve: the API (every limit and bad upload), the token, batching, the command's checks, a load
test on loopback and the page in headless Chromium.  A tiny untrained model keeps it fast."""

import base64
import concurrent.futures
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from efr.commands import main as efr_main  # noqa: E402
from efr.data.synthetic.render import render_face  # noqa: E402
from efr.io.emotions import EMOTIONS  # noqa: E402
from efr.serve.app import create_app, running_server  # noqa: E402
from efr.serve.batching import Batcher, Busy  # noqa: E402
from efr.serve.limits import Limits  # noqa: E402
from predict_fixtures import RENDER_SIZE, blank_photo, save_tiny_model  # noqa: E402

TOKEN = "s3cret-token-0123456789"
LIMITS = Limits(max_upload_bytes=600_000, max_pixels=1_000_000, max_images=3)


def png(image):
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.fixture(scope="module")
def face_png():
    return png(render_face(1, "Happy", size=RENDER_SIZE))


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from efr.predict.predictor import load_predictor

    path = save_tiny_model(tmp_path_factory.mktemp("serve") / "best.keras", image_size=32)
    return load_predictor(path, runtime="keras")


@pytest.fixture(scope="module")
def client(predictor):
    from fastapi.testclient import TestClient

    with TestClient(create_app(predictor, LIMITS)) as test_client:
        yield test_client


def post(client, *files, **kwargs):
    return client.post("/predict", files=[("files", f) for f in files], **kwargs)


def test_predict_answers_faces_boxes_labels_probabilities_and_timing(client, face_png):
    response = post(client, ("face.png", face_png, "image/png"), ("face2.png", face_png, "image/png"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [im["name"] for im in answer["images"]] == ["face.png", "face2.png"]
    image = answer["images"][0]
    assert (image["width"], image["height"]) == RENDER_SIZE
    assert len(image["faces"]) == 1
    face = image["faces"][0]
    assert len(face["box"]) == 4 and face["label"] in EMOTIONS
    assert list(face["probabilities"]) == list(EMOTIONS)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["confidence"] == max(face["probabilities"].values())
    assert set(answer["timing_ms"]) == {"detect", "queue", "classify", "total"}


def test_photo_without_a_face_is_200_with_no_faces(client):
    response = post(client, ("blank.png", png(blank_photo()), "image/png"))
    assert response.status_code == 200
    assert response.json()["images"][0]["faces"] == []


def test_health_model_docs_and_page(client):
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/model").json()
    assert info["classes"] == list(EMOTIONS) and info["input_size"] == [32, 32]
    assert info["runtime"] == "keras" and info["limits"]["max_images"] == 3
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/").text
    assert "getUserMedia" in page and "/predict" in page
    assert "<script src" not in page and "https://" not in page and "<link" not in page  # no CDN


@pytest.mark.parametrize("case, status", [
    ("text file", 415), ("empty file", 415), ("truncated jpeg", 422), ("too many pixels", 413),
    ("too many images", 413), ("too large body", 413), ("not multipart", 400), ("no files field", 400),
    ("malformed multipart", 400),
])
def test_bad_uploads_get_a_4xx_and_the_server_keeps_serving(client, face_png, case, status):
    jpeg = cv2.imencode(".jpg", render_face(2, "Sad", size=RENDER_SIZE))[1].tobytes()
    big = np.zeros((1100, 1000, 3), np.uint8)  # 1.1 MP over the 1 MP limit, a few kB as PNG
    requests = {
        "text file": lambda: post(client, ("photo.jpg", b"hello, not a photo\n", "image/jpeg")),
        "empty file": lambda: post(client, ("photo.png", b"", "image/png")),
        "truncated jpeg": lambda: post(client, ("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")),
        "too many pixels": lambda: post(client, ("big.png", png(big), "image/png")),
        "too many images": lambda: post(client, *[(f"{i}.png", face_png, "image/png") for i in range(4)]),
        "too large body": lambda: post(client, ("huge.png", face_png + bytes(700_000), "image/png")),
        "not multipart": lambda: client.post("/predict", json={"files": "photo.png"}),
        "no files field": lambda: client.post("/predict", files=[("photo", ("a.png", face_png, "image/png"))]),
        "malformed multipart": lambda: client.post(
            "/predict", content=b"--xyz\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=xyz"}),
    }
    response = requests[case]()
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and "\n" not in message
    again = post(client, ("face.png", face_png, "image/png"))
    assert again.status_code == 200 and len(again.json()["images"][0]["faces"]) == 1


def test_a_path_as_file_name_is_only_echoed(client, face_png):
    response = post(client, ("/etc/passwd", face_png, "image/png"))
    assert response.status_code == 200
    assert response.json()["images"][0]["name"] == "/etc/passwd"
    assert len(response.json()["images"][0]["faces"]) == 1


def test_token_is_checked_on_every_request(predictor, face_png):
    from fastapi.testclient import TestClient

    with TestClient(create_app(predictor, LIMITS, token=TOKEN)) as guarded:
        for path in ("/", "/health", "/model", "/docs", "/openapi.json"):
            assert guarded.get(path).status_code == 401, path
        assert guarded.get("/health", headers={"x-efr-token": "wrong"}).status_code == 401
        assert post(guarded, ("f.png", face_png, "image/png")).status_code == 401
        ok = post(guarded, ("f.png", face_png, "image/png"), headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert guarded.get("/model", headers={"x-efr-token": TOKEN}).status_code == 200
        page = guarded.get(f"/?token={TOKEN}")  # the page's later requests carry the cookie it sets
        assert page.status_code == 200 and guarded.get("/health").status_code == 200


def test_batcher_joins_requests_and_refuses_past_its_queue():
    release = threading.Event()
    calls = []

    def classify(crops):
        calls.append(len(crops))
        release.wait(5)
        return np.tile(np.eye(1, 7), (len(crops), 1))

    batcher = Batcher(classify, max_batch=64, max_wait_ms=50, max_queue=3)
    try:
        first = batcher.submit([0])  # taken by the model thread, which then waits in classify
        time.sleep(0.2)
        queued = [batcher.submit([1, 2]) for _ in range(3)]
        with pytest.raises(Busy):
            batcher.submit([3])
        release.set()
        assert first.result(5)[0].shape == (1, 7)
        assert [f.result(5)[0].shape for f in queued] == [(2, 7)] * 3
        assert calls == [1, 6]  # the three queued requests went to the model in one call
        assert batcher.submit([]).result(1)[0] is None  # no faces: no model call
    finally:
        release.set()
        batcher.close()


@pytest.mark.parametrize("argv, says", [
    (["--host", "0.0.0.0"], "--token"),
    (["--token", "short"], "at least 16"),
    (["--max-upload-mb", "0"], "--max-upload-mb 0"),
    (["--port", "70000"], "--port 70000"),
])
def test_serve_refuses_bad_options_in_one_line(argv, says, caplog, monkeypatch):
    monkeypatch.delenv("EFR_SERVE_TOKEN", raising=False)
    assert efr_main(["serve", "--model", "efrnet", *argv]) == 2
    errors = [r.getMessage() for r in caplog.records if r.getMessage().startswith("error:")]
    assert len(errors) == 1 and says in errors[0]


def test_load_on_loopback_loses_no_request(predictor, face_png):
    import httpx

    total, clients = 200, 8
    app = create_app(predictor, LIMITS)
    with running_server(app) as url:
        def one_client(count):
            codes = []
            with httpx.Client(base_url=url, timeout=30) as http:
                for _ in range(count):
                    response = http.post("/predict", files=[("files", ("f.png", face_png, "image/png"))])
                    codes.append((response.status_code, len(response.json()["images"][0]["faces"])))
            return codes

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            results = [c for part in pool.map(one_client, [total // clients + (i < total % clients)
                                                            for i in range(clients)]) for c in part]
        seconds = time.perf_counter() - started
        health = httpx.get(url + "/health").json()
    assert len(results) == total and set(results) == {(200, 1)}
    assert health["requests"] >= total and health["refused"] == 0
    assert health["model_calls"] < total  # requests were batched together
    assert seconds < 90


@pytest.mark.browser
def test_page_shows_the_label_of_an_uploaded_photo_in_chromium(predictor, face_png, tmp_path):
    from train_fixtures import chromium

    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on PATH: install the Debian package 'chromium' to run the page test")
    data_url = "data:image/png;base64," + base64.b64encode(face_png).decode()
    with running_server(create_app(predictor, LIMITS)) as url:
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path}",
             "--virtual-time-budget=20000", "--dump-dom", f"{url}/#try={data_url}"],
            capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert 'data-state="done"' in dom, (result.returncode, result.stderr[-1500:], dom[-1500:])
    labels = [name for name in EMOTIONS if f'data-label="{name}"' in dom]
    assert len(labels) == 1
    assert "classes: " + ", ".join(EMOTIONS) in dom  # the model line from GET /model
