"""demo.py runs every stage end to end at its smallest settings, and a re-run is safe."""

import csv
import importlib.util
from pathlib import Path

import pytest

from efr.commands.cli import run

REPO = Path(__file__).resolve().parents[1]


def load_demo():
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_demo_smoke_runs_every_stage(tmp_path, capsys):
    demo = load_demo()
    out = tmp_path / "demo"
    assert run(demo.main, ["--smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for stage in ("[1/5]", "crop.py", "data_aug.py", "efe_cnn.py", "predict.py"):
        assert stage in printed
    run_dir = out / "runs" / "demo"
    assert printed.rstrip().splitlines()[-1] == f"report: {run_dir / 'report.html'}"
    for name in ("report.html", "best.keras", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert len(list((out / "photos").glob("Rafd090_*.jpg"))) == 7 * 8

    # predict.py ran on raw photos of Test subjects only (never trained on)
    with open(out / "Dataset" / "manifest.csv", newline="") as handle:
        manifest = list(csv.DictReader(handle))
    test_sources = {r["source"] for r in manifest if r["split"] == "Test"}
    train_sources = {r["source"] for r in manifest if r["split"] in ("Train", "Valid")}
    with open(out / "predictions" / "predictions.csv", newline="") as handle:
        predicted = {Path(r["source"]).name for r in csv.DictReader(handle)}
    assert predicted and predicted <= test_sources and not predicted & train_sources
    assert len(list((out / "predictions" / "annotated").glob("*.jpg"))) == len(predicted)

    # A second run reuses the photos and crops and still ends with the report.
    before = {p: p.stat().st_mtime_ns for p in (out / "photos").iterdir()}
    assert run(demo.main, ["--smoke", "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "photos").iterdir()} == before
    assert "report:" in capsys.readouterr().out


def test_demo_refuses_too_few_subjects(tmp_path, caplog):
    demo = load_demo()
    assert run(demo.main, ["--smoke", "--subjects", "2", "--out", str(tmp_path / "d")]) == 2
    assert "at least 5 people" in caplog.text
    assert not (tmp_path / "d").exists()


def test_command_line_shortens_long_input_lists():
    demo = load_demo()
    line = demo.command_line("predict", ["--model", "m.keras"] + [f"p{i}.jpg" for i in range(30)])
    assert line.startswith("$ efr predict --model m.keras p0.jpg") and "(20 more)" in line


def test_demo_docs_table_meets_its_floor_and_the_example_output_is_its_seed_0():
    """docs/demo.md's per-seed table (written by bench/demo_seeds.py) and the figures the docs quote agree."""
    import re
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    import demo_seeds

    text = (REPO / "docs" / "demo.md").read_text(encoding="utf-8")
    assert text.count(demo_seeds.BEGIN) == 1 and text.count(demo_seeds.END) == 1
    section = text.split(demo_seeds.BEGIN)[1].split(demo_seeds.END)[0]
    rows = re.findall(r"^\| (\d+) \| ([0-9.]+) \| (\d+)/(\d+) \| (\d+) \| (\d+) \|$", section, re.M)
    assert len(rows) >= 5, "the table should hold at least 5 seeds"
    assert all(float(acc) >= demo_seeds.FLOOR for _, acc, *_ in rows), rows
    assert f"at least {demo_seeds.FLOOR:.2f} test accuracy on every seed" in text
    seed, acc, right, photos, _, _ = rows[0]
    assert seed == "0"
    assert f"test accuracy (efe_cnn.py, Test faces): {acc} (chance 0.125)" in text
    assert f"held-out raw photos (predict.py): {right}/{photos} right" in text
