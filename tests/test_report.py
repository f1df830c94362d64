"""efr.evaluate.report and efr.evaluate.metrics: a self-contained report.html that really renders."""

import re

import numpy as np
import pytest

from efr.evaluate import metrics as evaluate, report
from efr.io.imageio import write_image
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


def test_flags_name_what_a_reader_should_not_miss():
    recall = {"Angry": 0.9, "Happy": 0.125, "Sad": 0.0}
    history = [{"epoch": float(i), "val_loss": v} for i, v in enumerate([1.0, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1])]
    flags = evaluate.report_flags(recall, 0.125, support={"Angry": 3, "Happy": 3, "Sad": 0},
                                  histories=[("", history)], test_subjects=3, synthetic=True)
    assert len(flags) == 4
    assert "Happy" in flags[0] and "Sad" not in flags[0] and "Angry" not in flags[0]  # Sad has no test photos
    assert "rose for 5 epochs" in flags[1] and "epoch 2 of 7" in flags[1]
    assert "only 3 subject(s)" in flags[2] and "Synthetic" in flags[3]
    calm = [{"epoch": float(i), "val_loss": v} for i, v in enumerate([1.0, 0.8, 0.7, 0.75, 0.76])]
    assert evaluate.report_flags({"Angry": 0.9}, 0.125, histories=[("", calm)], test_subjects=12) == []


def _full_report(out, wrong):
    wrong = [dict(w, subject="S7") for w in wrong]
    wrong[0] = dict(wrong[0], image=np.full((50, 50, 3), 200, np.uint8))  # a crop held in memory
    (out / "metrics.json").write_text("{}")
    return report.write_report(
        out / "report.html", "Run", [("accuracy", 0.5)], figures=[("counts", out / "confusion_matrix.png")],
        gallery=wrong, flags=["Recall at or below chance for Sad", "Synthetic data"],
        provenance=[("git commit", "abc123"), ("command", "efr train --dataset <D>")],
        links=report.existing_links(out, ("args.json", "metrics.json")))


def test_report_shows_flags_provenance_links_and_captions(report_parts):
    out, _, wrong = report_parts
    text = _full_report(out, wrong).read_text()
    assert text.index("Read this first") < text.index("<th>measure</th>")  # flags first, summary labelled
    assert text.count('class="flag"') == 2
    assert "efr train --dataset &lt;D&gt;" in text and "abc123" in text
    assert '<a href="metrics.json">' in text and 'href="args.json"' not in text  # only files that exist
    assert text.count("subject S7") == 3 and "face &lt;1&gt;.png</span>" in text


@pytest.mark.browser
def test_full_report_renders_in_chromium(report_parts, tmp_path_factory):
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on PATH: install the Debian package 'chromium' to run the report rendering test")
    out, _, wrong = report_parts
    path = _full_report(out, wrong)
    assert render_check(path, browser, tmp_path_factory.mktemp("chromium")) == ("pass", (4, 4))
