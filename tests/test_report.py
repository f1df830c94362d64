"""efr.report and efr.evaluate: a self-contained report.html that really renders."""

import re

import numpy as np
import pytest

from efr import evaluate, report
from efr.imageio import write_image
from train_fixtures import chromium, render_check

CLASSES = ["Angry", "Happy", "Sad"]


@pytest.fixture
def report_parts(tmp_path):
    y_true = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1],
                      [0.1, 0.3, 0.6], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3]])
    metrics = evaluate.write_evaluation(tmp_path, y_true, probs, CLASSES)
    faces = []
    for i in range(len(y_true)):
        path = tmp_path / "faces" / f"face <{i}>.png"  # a name that needs escaping in HTML
        write_image(path, np.full((40, 40, 3), 40 * i, np.uint8))
        faces.append(path)
    wrong = evaluate.misclassified(faces, y_true, probs, CLASSES)
    return tmp_path, metrics, wrong


def test_metrics_match_hand_counts(report_parts):
    out, metrics, wrong = report_parts
    assert metrics["accuracy"] == pytest.approx(3 / 6)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert metrics["per_class_recall"] == {"Angry": 0.5, "Happy": 0.5, "Sad": 0.5}
    assert [w["confidence"] for w in wrong] == sorted((w["confidence"] for w in wrong), reverse=True)
    assert [(w["true"], w["predicted"]) for w in wrong] == [("Angry", "Happy"), ("Happy", "Sad"), ("Sad", "Angry")]
    assert (out / "confusion_matrix.csv").read_text().splitlines()[1] == "Angry,1,1,0"
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png", "classification_report.txt"):
        assert (out / name).stat().st_size > 0


def _write(out, wrong, figures=None):
    figures = figures or [("counts", out / "confusion_matrix.png"), ("normalised", out / "confusion_matrix_normalized.png")]
    return report.write_report(out / "report.html", "Run <x>", [("accuracy", 0.5)],
                               tables=[("per class", ("class", "recall"), [("Angry", 0.5)])],
                               figures=figures, gallery=wrong, gallery_total=3, notes=["a & b"])


def test_report_is_self_contained(report_parts):
    out, _, wrong = report_parts
    text = _write(out, wrong).read_text()
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 2 + 3  # two plots, three misclassified faces
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<x>" not in text and "Run &lt;x&gt;" in text and "face &lt;1&gt;.png" in text
    assert "http://" not in text and "https://" not in text


@pytest.mark.browser
def test_report_renders_every_image_in_chromium(report_parts, tmp_path_factory):
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on PATH: install the Debian package 'chromium' to run the report rendering test")
    out, _, wrong = report_parts
    path = _write(out, wrong)
    assert render_check(path, browser, tmp_path_factory.mktemp("chromium")) == ("pass", (5, 5))
    # The check can fail: a broken image is reported as such.
    broken = path.read_text().replace('src="data:image/png;base64,', 'src="data:image/png;base64,AAAA', 1)
    path.write_text(broken)
    status, (ok, total) = render_check(path, browser, tmp_path_factory.mktemp("chromium"))
    assert status == "fail" and (ok, total) == (4, 5)
