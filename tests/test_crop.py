"""Stage 1 end to end on small synthetic photo sets: layouts, filters, bad input, re-runs, CLI."""

import csv
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import efr.crop.workers
from efr.commands.cli import run
from efr.crop.destination import SETTINGS_NAME
from efr.crop.summary import SUMMARY_NAME
from efr.crop.options import CropOptions
from efr.crop.run import crop_dataset
from efr.io.errors import EFRError
from efr.io.manifest import FIELDS, SPLITS, check_subject_disjoint, read_manifest, write_manifest
from efr.io.rafd import GAZES
from efr.data.synthetic.render import generate_rafd_like, render_face

REPO = Path(__file__).resolve().parents[1]
SMALL = (170, 256)  # (width, height): RaFD frames at a quarter size, quick to make and crop
FAST = {"size": 64}  # small crops keep the runs quick; one test checks the 256 default


def crop(src, dst, workers=1, overwrite=False, **options):
    return crop_dataset(src, dst, CropOptions(**options), workers=workers, overwrite=overwrite, progress=False)


def load_cli():
    spec = importlib.util.spec_from_file_location("crop_cli", REPO / "crop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_hashes(folder):
    """{relative path: sha256} of every file, to prove a folder was not touched."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def dataset_images(dst):
    files = (p for split in SPLITS for p in (Path(dst) / split).rglob("*") if p.is_file())
    return sorted(p.relative_to(dst).as_posix() for p in files)


def rows_by_source(dst):
    return {r["source"]: r for r in read_manifest(dst)}


@pytest.fixture(scope="module")
def rafd_src(tmp_path_factory):
    """5 subjects x 8 emotions x 3 gazes from the frontal camera, 8 side-camera photos in a
    subfolder, and a notes file: 128 photos, 40 of them frontal-frontal."""
    src = tmp_path_factory.mktemp("rafd")
    generate_rafd_like(src, subjects=5, gazes=GAZES, size=SMALL)
    generate_rafd_like(src / "side camera", subjects=1, angles=("045",), size=SMALL)
    (src / "notes.txt").write_text("shot in 2008\n")
    return src


def _save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


@pytest.fixture(scope="module")
def folders_src(tmp_path_factory):
    """An <Emotion>/ layout with every awkward case: image modes, an alias folder, an
    unknown emotion, damaged files, a deeper folder and a non-image file."""
    src = tmp_path_factory.mktemp("folders")
    face = {(s, e): render_face(s, e, size=SMALL) for s in (1, 2, 3, 4) for e in ("Happy", "Angry", "Sad")}
    grey = cv2.cvtColor(face[1, "Happy"], cv2.COLOR_BGR2GRAY)
    _save(src / "Happy" / "S1_happy.png", grey)
    rgb = Image.fromarray(cv2.cvtColor(face[2, "Happy"], cv2.COLOR_BGR2RGB))
    rgb.quantize(colors=128).save(src / "Happy" / "S2_happy.png")  # palette
    _save(src / "Happy" / "S3_happy.png", np.dstack([face[3, "Happy"], np.full(grey.shape, 255, np.uint8)]))
    _save(src / "Happy" / "S4_happy.png", face[4, "Happy"].astype(np.uint16) * 257)  # 16-bit
    for s in (1, 2, 3, 4):
        _save(src / "anger" / f"S{s}_angry.jpg", face[s, "Angry"])  # alias folder
    _save(src / "Sad" / "S1_sad.bmp", face[1, "Sad"])
    _save(src / "Sad" / "S2_sad.tif", face[2, "Sad"])
    _save(src / "Sad" / "session 2" / "S3_sad.jpg", face[3, "Sad"])
    data = cv2.imencode(".jpg", face[4, "Sad"])[1].tobytes()
    (src / "Sad" / "S4_sad_cut.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (src / "Sad" / "S4_sad_notes.jpg").write_text("not a photo")  # text renamed .jpg
    _save(src / "Bored" / "S1_bored.jpg", face[1, "Sad"])  # unknown emotion
    (src / "README.txt").write_text("JAFFE-like test set\n")
    return src


FOLDERS_REGEX = r"^(S\d+)_"


# ---------------------------------------------------------------------------------------
# RaFD layout


def test_rafd_folder_becomes_a_subject_disjoint_dataset(rafd_src, tmp_path):
    dst = tmp_path / "Dataset"
    summary = crop(rafd_src, dst)  # every default: 256 px, frontal camera, frontal gaze
    assert summary.layout == "rafd"
    assert summary.counts == {"ok": 40, "filtered": 88}
    assert summary.ignored_files == 1 and summary.written == 40 and summary.reused == 0

    rows = read_manifest(dst)
    assert len(rows) == 128 and all(r["kind"] == "original" for r in rows)
    assert {r["source"] for r in rows} == {p.relative_to(rafd_src).as_posix() for p in rafd_src.rglob("*.jpg")}
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["gaze"] == "frontal" and r["angle"] == "090" for r in ok)
    for row in ok:
        assert row["output"] == f"{row['split']}/{row['emotion']}/{Path(row['source']).stem}.png"
        image = cv2.imread(str(dst / row["output"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (256, 256, 3)
        x, y, w, h = (int(row[k]) for k in "xywh")
        assert w == h and x >= 0 and y >= 0 and x + w <= SMALL[0] and y + h <= SMALL[1]
    filtered = [r for r in rows if r["status"] == "filtered"]
    assert sum("gaze" in r["reason"] for r in filtered) == 80
    assert sum("camera angle 045" in r["reason"] for r in filtered) == 8
    assert all(r["output"] == "" for r in filtered)

    check_subject_disjoint(rows)
    assert summary.subjects == {"Train": 3, "Valid": 1, "Test": 1}
    assert sum(sum(t.values()) for t in summary.table.values()) == 40
    assert dataset_images(dst) == sorted(r["output"] for r in ok)
    settings = json.loads((dst / SETTINGS_NAME).read_text())
    assert settings["settings"]["gazes"] == ["frontal"] and "versions" in settings
    assert json.loads((dst / SUMMARY_NAME).read_text())["counts"]["ok"] == 40
    assert "Train" in summary.format() and "Surprised" in summary.format()


def test_gaze_all_keeps_all_three_gazes(rafd_src, tmp_path):
    summary = crop(rafd_src, tmp_path / "ds", gazes=None, **FAST)
    assert summary.counts == {"ok": 120, "filtered": 8}
    assert {r["gaze"] for r in read_manifest(tmp_path / "ds") if r["status"] == "ok"} == set(GAZES)


def test_rafd_names_inside_emotion_folders_are_read_as_rafd(tmp_path):
    src = tmp_path / "src"
    for path in generate_rafd_like(tmp_path / "flat", subjects=3, emotions=("Happy", "Sad"), size=SMALL):
        emotion = "Happy" if "happy" in path.name else "Sad"
        (src / emotion).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / emotion / path.name)
    summary = crop(src, tmp_path / "ds", **FAST)
    assert summary.layout == "rafd" and summary.counts == {"ok": 6}


def test_source_folder_is_byte_identical_after_runs(rafd_src, folders_src, tmp_path):
    before = {src: tree_hashes(src) for src in (rafd_src, folders_src)}
    mtimes = {p: p.stat().st_mtime_ns for src in before for p in src.rglob("*")}
    crop(rafd_src, tmp_path / "a", **FAST)
    crop(rafd_src, tmp_path / "a", **FAST)  # a re-run too
    crop(folders_src, tmp_path / "b", subject_regex=FOLDERS_REGEX, **FAST)
    assert {src: tree_hashes(src) for src in before} == before
    assert {p: p.stat().st_mtime_ns for src in before for p in src.rglob("*")} == mtimes


# ---------------------------------------------------------------------------------------
# Folder layout and bad photos


def test_folder_layout_with_every_awkward_file(folders_src, tmp_path, caplog):
    caplog.set_level("INFO")
    dst = tmp_path / "ds"
    summary = crop(folders_src, dst, subject_regex=FOLDERS_REGEX, **FAST)
    assert summary.layout == "folders"
    assert summary.counts == {"ok": 11, "unreadable": 2, "unknown_label": 1}
    assert summary.ignored_files == 1 and summary.mapped_folders == {"anger": "Angry"}
    assert "'anger' read as emotion Angry" in caplog.text

    rows = rows_by_source(dst)
    # grey, palette, RGBA and 16-bit PNGs, BMP, TIFF and a deeper folder all crop fine
    for source in ("Happy/S1_happy.png", "Happy/S2_happy.png", "Happy/S3_happy.png", "Happy/S4_happy.png",
                   "Sad/S1_sad.bmp", "Sad/S2_sad.tif", "Sad/session 2/S3_sad.jpg"):
        assert rows[source]["status"] == "ok", rows[source]
        assert cv2.imread(str(dst / rows[source]["output"])).shape == (64, 64, 3)
    assert rows["anger/S1_angry.jpg"]["emotion"] == "Angry" and rows["anger/S1_angry.jpg"]["subject"] == "S1"
    cut = rows["Sad/S4_sad_cut.jpg"]
    assert cut["status"] == "unreadable" and "truncated" in cut["reason"] and "S4_sad_cut.jpg" in cut["reason"]
    assert rows["Sad/S4_sad_notes.jpg"]["status"] == "unreadable"
    assert "not an image (a text file)" in rows["Sad/S4_sad_notes.jpg"]["reason"]
    assert "'Bored' is not an emotion folder" in rows["Bored/S1_bored.jpg"]["reason"]
    assert {r["subject"] for r in rows.values() if r["status"] == "ok"} == {"S1", "S2", "S3", "S4"}
    check_subject_disjoint(list(rows.values()))
    text = summary.format()
    assert "unreadable" in text and "S4_sad_cut.jpg" in text and "Bored" in text and "anger -> Angry" in text


def test_file_names_not_matching_the_subject_regex_are_unknown_labels(folders_src, tmp_path):
    summary = crop(folders_src, tmp_path / "ds", subject_regex=r"^(S[123])_", **FAST)
    rows = rows_by_source(tmp_path / "ds")
    assert "subject-regex" in rows["Happy/S4_happy.png"]["reason"] and rows["Happy/S4_happy.png"]["output"] == ""
    assert summary.counts["unknown_label"] == 1 + 4  # Bored + the four S4 photos (damaged ones included)


def test_without_subject_regex_photos_are_split_one_by_one_with_a_loud_warning(folders_src, tmp_path, caplog):
    summary = crop(folders_src, tmp_path / "ds", **FAST)
    assert summary.split_by_image and summary.counts["ok"] == 11
    assert any("SAME PERSON" in w for w in summary.warnings) and "SAME PERSON" in caplog.text
    assert "SAME PERSON" in summary.format()
    assert all(r["subject"] == "" for r in read_manifest(tmp_path / "ds"))


def test_bad_subject_regex_is_refused_before_any_work(folders_src, tmp_path):
    with pytest.raises(EFRError, match="no group"):
        crop(folders_src, tmp_path / "ds", subject_regex=r"^S\d+_")
    with pytest.raises(EFRError, match="not a valid regular expression"):
        crop(folders_src, tmp_path / "ds", subject_regex=r"^(S\d+_")
    assert not (tmp_path / "ds").exists()


def test_layout_rafd_on_folders_says_nothing_can_be_used(folders_src, tmp_path):
    with pytest.raises(EFRError, match="none of the 14 photos"):
        crop(folders_src, tmp_path / "ds", layout="rafd", **FAST)


def test_same_file_name_twice_gives_two_outputs(tmp_path):
    src = tmp_path / "src"
    for s in (1, 2, 3):
        _save(src / "Happy" / f"S{s}_x.jpg", render_face(s, "Happy", size=SMALL))
    _save(src / "Happy" / "S1_x.png", render_face(1, "Happy", size=SMALL))
    crop(src, tmp_path / "ds", subject_regex=FOLDERS_REGEX, **FAST)
    outputs = [r["output"] for r in read_manifest(tmp_path / "ds") if r["subject"] == "S1"]
    assert len(set(outputs)) == 2 and len(dataset_images(tmp_path / "ds")) == 4


@pytest.fixture()
def src_with_blank(tmp_path):
    """6 RaFD photos of 3 subjects; one of them is a blank frame with no face."""
    src = tmp_path / "src"
    paths = generate_rafd_like(src, subjects=3, emotions=("Happy", "Sad"), size=SMALL)
    blank = paths[1]
    cv2.imwrite(str(blank), np.full((SMALL[1], SMALL[0], 3), 200, np.uint8))
    return src, blank.name


def test_on_miss_skip_lists_the_photo_without_output(src_with_blank, tmp_path):
    src, blank = src_with_blank
    summary = crop(src, tmp_path / "ds", **FAST)
    row = rows_by_source(tmp_path / "ds")[blank]
    assert row["status"] == "no_face" and row["output"] == "" and row["split"] in SPLITS
    assert summary.counts == {"ok": 5, "no_face": 1} and summary.no_face == [blank]
    assert len(dataset_images(tmp_path / "ds")) == 5


def test_on_miss_center_crops_the_centre_square(src_with_blank, tmp_path):
    src, blank = src_with_blank
    summary = crop(src, tmp_path / "ds", on_miss="center", **FAST)
    row = rows_by_source(tmp_path / "ds")[blank]
    assert row["status"] == "ok" and "centre" in row["reason"]
    assert [int(row[k]) for k in "xywh"] == [0, (SMALL[1] - SMALL[0]) // 2, SMALL[0], SMALL[0]]
    assert summary.centre_crops == 1 and (tmp_path / "ds" / row["output"]).is_file()


def test_on_miss_fail_stops_naming_the_file_and_keeps_finished_work(src_with_blank, tmp_path):
    src, blank = src_with_blank
    with pytest.raises(EFRError, match=blank):
        crop(src, tmp_path / "ds", on_miss="fail", **FAST)
    rows = read_manifest(tmp_path / "ds")
    assert rows and all(r["status"] == "ok" for r in rows if r["source"] != blank)


def test_nothing_usable_is_an_error_with_the_reasons(tmp_path):
    src = tmp_path / "src"
    for s in (1, 2, 3):
        _save(src / "Happy" / f"S{s}.jpg", np.full((64, 64, 3), 90, np.uint8))
    summary = crop(src, tmp_path / "ds", subject_regex=r"(S\d)", **FAST)
    assert summary.usable == 0 and summary.counts == {"no_face": 3}
    with pytest.raises(EFRError, match="no face crops.*3 no_face.*--on-miss center"):
        summary.raise_if_unusable()
    assert run(load_cli().main, ["--src", str(src), "--dst", str(tmp_path / "ds"), "--subject-regex", r"(S\d)",
                                 "--size", "64", "--quiet"]) == 2


# ---------------------------------------------------------------------------------------
# Folders, settings and re-runs


def test_missing_empty_and_file_sources_are_refused(tmp_path):
    with pytest.raises(EFRError, match="does not exist"):
        crop(tmp_path / "nowhere", tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EFRError, match="no images.*empty folder"):
        crop(tmp_path / "empty", tmp_path / "ds")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("x")
    with pytest.raises(EFRError, match="1 other file.*notes.txt"):
        crop(tmp_path / "notes", tmp_path / "ds")
    with pytest.raises(EFRError, match="is a file"):
        crop(tmp_path / "notes" / "notes.txt", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_output_inside_source_and_source_inside_output_are_refused(rafd_src, tmp_path):
    with pytest.raises(EFRError, match="inside the source folder"):
        crop(rafd_src, rafd_src / "Dataset")
    with pytest.raises(EFRError, match="inside the source folder"):
        crop(rafd_src, rafd_src)
    with pytest.raises(EFRError, match="inside the output folder"):
        crop(rafd_src, rafd_src.parent)
    assert not (rafd_src / "Dataset").exists()


def test_foreign_non_empty_output_is_refused(rafd_src, tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "thesis.tex").write_text("mine")
    with pytest.raises(EFRError, match="not made by crop.py.*--overwrite"):
        crop(rafd_src, tmp_path / "ds", **FAST)
    crop(rafd_src, tmp_path / "ds", overwrite=True, **FAST)
    assert (tmp_path / "ds" / "thesis.tex").read_text() == "mine"  # --overwrite replaces only what crop.py makes


def test_changed_settings_are_refused_naming_the_setting_and_overwrite_replaces(rafd_src, tmp_path):
    dst = tmp_path / "ds"
    crop(rafd_src, dst, **FAST)
    first = read_manifest(dst)
    with pytest.raises(EFRError, match=r"--margin was 0\.0, now 0\.25.*new --dst.*--overwrite"):
        crop(rafd_src, dst, margin=0.25, **FAST)
    with pytest.raises(EFRError, match="--split"):
        crop(rafd_src, dst, fractions=(0.6, 0.2, 0.2), **FAST)
    assert read_manifest(dst) == first  # refused runs change nothing
    summary = crop(rafd_src, dst, margin=0.25, overwrite=True, **FAST)
    assert summary.written == 40 and summary.reused == 0
    assert json.loads((dst / SETTINGS_NAME).read_text())["settings"]["margin"] == 0.25
    # A wider margin gives bigger boxes around the same faces.
    widths = {r["source"]: int(r["w"]) for r in first if r["status"] == "ok"}
    assert all(int(r["w"]) > widths[r["source"]] for r in read_manifest(dst) if r["status"] == "ok")


def test_rerun_with_the_same_settings_writes_nothing(rafd_src, tmp_path):
    dst = tmp_path / "ds"
    crop(rafd_src, dst, **FAST)
    manifest = (dst / "manifest.csv").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in dst.rglob("*.png")}
    summary = crop(rafd_src, dst, workers=2, **FAST)  # the worker count is not a setting
    assert summary.written == 0 and summary.reused == 40
    assert (dst / "manifest.csv").read_bytes() == manifest
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.png")} == mtimes


def test_missing_outputs_manifest_and_partial_files_are_repaired(rafd_src, tmp_path):
    dst = tmp_path / "ds"
    crop(rafd_src, dst, **FAST)
    manifest = (dst / "manifest.csv").read_bytes()
    outputs = dataset_images(dst)
    for output in outputs[:3]:
        (dst / output).unlink()
    leftover = dst / "Train" / "Happy" / ".Rafd090_99.1234.partial.png"
    leftover.write_bytes(b"half")
    summary = crop(rafd_src, dst, **FAST)
    assert summary.written == 3 and summary.reused == 37 and not leftover.exists()
    assert (dst / "manifest.csv").read_bytes() == manifest and dataset_images(dst) == outputs
    (dst / "manifest.csv").unlink()
    summary = crop(rafd_src, dst, **FAST)
    assert summary.written == 40 and dataset_images(dst) == outputs  # redone, no duplicates
    assert (dst / "manifest.csv").read_bytes() == manifest


def test_interrupted_run_resumes_where_it_stopped(rafd_src, tmp_path, monkeypatch, caplog):
    clean = tmp_path / "clean"
    crop(rafd_src, clean, **FAST)
    dst = tmp_path / "ds"
    real_crop_one, calls = efr.crop.workers.crop_one, []

    def crop_one_then_interrupt(task):
        if len(calls) == 15:
            raise KeyboardInterrupt
        calls.append(task)
        return real_crop_one(task)

    monkeypatch.setattr(efr.crop.workers, "crop_one", crop_one_then_interrupt)
    with caplog.at_level("ERROR", logger="efr"):  # issue 23.16: Ctrl-C says what was kept and how to go on
        assert run(lambda _argv: crop(rafd_src, dst, **FAST)) == 130
    assert re.search(r"interrupted: 15 crop\(s\) kept in \S*ds \(its manifest.csv lists them\); re-run the same "
                     r"command to crop the other 25 photo\(s\)", caplog.text)
    monkeypatch.undo()
    saved = read_manifest(dst)
    assert sum(r["status"] == "ok" for r in saved) == 15  # the finished crops were recorded
    summary = crop(rafd_src, dst, **FAST)
    assert summary.reused == 15 and summary.written == 25
    assert (dst / "manifest.csv").read_bytes() == (clean / "manifest.csv").read_bytes()
    assert dataset_images(dst) == dataset_images(clean)


def test_rerun_drops_crops_of_photos_that_left_the_source(tmp_path):
    src = tmp_path / "src"
    paths = generate_rafd_like(src, subjects=3, emotions=("Happy", "Sad"), size=SMALL)
    dst = tmp_path / "ds"
    crop(src, dst, **FAST)
    gone = rows_by_source(dst)[paths[0].name]["output"]
    paths[0].unlink()
    summary = crop(src, dst, **FAST)
    # (The class-aware split may move a subject once its classes change; those crops are made again.)
    assert summary.reused + summary.written == 5 and summary.reused >= 1
    assert not (dst / gone).exists() and paths[0].name not in rows_by_source(dst)


def test_rerun_keeps_augmented_rows_of_kept_crops(rafd_src, tmp_path):
    dst = tmp_path / "ds"
    crop(rafd_src, dst, **FAST)
    rows = read_manifest(dst)
    parent = next(r for r in rows if r["status"] == "ok" and r["split"] == "Train")
    copy = parent["output"].replace(".png", "__aug-x-0.png")
    shutil.copy(dst / parent["output"], dst / copy)
    orphan = "Train/Happy/gone__aug-x-0.png"
    shutil.copy(dst / parent["output"], dst / orphan)
    augmented = [dict(parent, output=copy, kind="augmented", parent=parent["output"], recipe="x"),
                 dict(parent, output=orphan, kind="augmented", parent="Train/Happy/gone.png", recipe="x")]
    # data_aug.py lists images it finds without a row as originals whose source is the file itself.
    extra = "Train/Happy/added_by_hand.png"
    shutil.copy(dst / parent["output"], dst / extra)
    listed = dict.fromkeys(FIELDS, "") | {"source": extra, "output": extra, "split": "Train", "emotion": "Happy",
                                          "status": "ok", "kind": "original", "reason": "no manifest row"}
    write_manifest(dst, rows + augmented + [listed])
    summary = crop(rafd_src, dst, **FAST)
    assert summary.reused == 40 and summary.counts["ok"] == 40
    after = read_manifest(dst)
    assert [r["output"] for r in after if r["kind"] == "augmented"] == [copy]
    assert (dst / copy).is_file() and not (dst / orphan).exists()
    assert listed in after and (dst / extra).is_file()


def test_folds_deal_out_every_subject(rafd_src, tmp_path):
    crop(rafd_src, tmp_path / "ds", folds=2, **FAST)
    rows = read_manifest(tmp_path / "ds")
    ok = [r for r in rows if r["status"] == "ok"]
    fold_of = {}
    for row in ok:
        assert fold_of.setdefault(row["subject"], row["fold"]) == row["fold"]  # one fold per subject
    assert sorted(fold_of.values()) == ["0", "0", "0", "1", "1"]  # 5 subjects: 3 + 2
    assert all(r["fold"] == "" for r in rows if r["status"] == "filtered")


def test_two_workers_give_the_same_dataset_as_one(rafd_src, tmp_path):
    crop(rafd_src, tmp_path / "one", workers=1, **FAST)
    summary = crop(rafd_src, tmp_path / "two", workers=2, **FAST)
    assert summary.written == 40
    one, two = read_manifest(tmp_path / "one"), read_manifest(tmp_path / "two")
    assert one == two and tree_hashes(tmp_path / "one" / "Train") == tree_hashes(tmp_path / "two" / "Train")


# ---------------------------------------------------------------------------------------
# The command line


def test_cli_runs_and_prints_the_table(rafd_src, tmp_path, capsys):
    cli = load_cli()
    dst = tmp_path / "ds"
    assert cli.main(["--src", str(rafd_src), "--dst", str(dst), "--size", "64", "--split", "0.6", "0.2", "0.2",
                     "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Train" in out and "40 ok" in out and "88 filtered" in out
    assert json.loads((dst / SETTINGS_NAME).read_text())["settings"]["fractions"] == [0.6, 0.2, 0.2]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--src", "{tmp}/nowhere"], "does not exist"),
        (["--src", "{src}", "--dst", "{src}/Dataset"], "inside the source folder"),
        (["--src", "{src}", "--split", "70", "20", "20"], "sums to 110"),
        (["--src", "{src}", "--gaze", "up"], "--gaze up"),
        (["--src", "{src}", "--angle", "030"], "--angle 030"),
        (["--src", "{src}", "--cascade", "nose.xml"], "nose.xml"),
        (["--src", "{src}", "--folds", "1"], "--folds 1"),
    ],
)
def test_cli_user_errors_exit_2_with_a_message(rafd_src, tmp_path, caplog, args, message):
    argv = [a.format(tmp=tmp_path, src=rafd_src) for a in args]
    if "--dst" not in argv:
        argv += ["--dst", str(tmp_path / "ds")]
    assert run(load_cli().main, argv + ["--quiet"]) == 2
    assert "error:" in caplog.text and message in caplog.text


def test_cli_script_runs_without_tensorflow(rafd_src, tmp_path):
    # One real interpreter: the exit status, and proof that cropping never imports TensorFlow.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(REPO / "crop.py"), "--src", str(rafd_src),
         "--dst", str(tmp_path / "ds"), "--size", "64", "--workers", "2", "--quiet"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "cv2" in imported and not imported & {"tensorflow", "keras", "torch"}
    with open(tmp_path / "ds" / "manifest.csv", newline="") as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == FIELDS


def test_overwrite_removes_only_what_the_manifest_lists(rafd_src, tmp_path):
    dst = tmp_path / "ds"
    crop(rafd_src, dst, **FAST)
    before = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    happy = next((dst / "Train").glob("*/*.png")).parent
    mine = happy / "mydata.jpg"
    mine.write_bytes(b"the user's own photo")
    (dst / "Valid" / "extra").mkdir()
    (dst / "Valid" / "extra" / "notes.txt").write_text("mine too")
    with pytest.raises(EFRError, match=r"2 file\(s\) under .* not listed in its manifest.csv.*mydata\.jpg.*notes\.txt"):
        crop(rafd_src, dst, margin=0.25, overwrite=True, **FAST)
    after = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert sorted(set(after) - {mine.relative_to(dst).as_posix(), "Valid/extra/notes.txt"}) == before  # untouched
    mine.unlink()
    shutil.rmtree(dst / "Valid" / "extra")
    summary = crop(rafd_src, dst, margin=0.25, overwrite=True, **FAST)
    assert summary.written == 40 and summary.reused == 0


def test_subjects_without_a_usable_photo_take_no_split_slot(tmp_path):
    src = tmp_path / "src"
    paths = generate_rafd_like(src, subjects=4, emotions=("Happy", "Sad"), size=SMALL)
    for path in paths:
        if "_04_" in path.name:
            path.write_text("not a photo")  # every photo of subject 04 is a text file
    summary = crop(src, tmp_path / "ds", fractions=(0.34, 0.33, 0.33), **FAST)
    assert summary.subjects == {"Train": 1, "Valid": 1, "Test": 1}  # 3 usable subjects, 3 slots
    rows = [r for r in read_manifest(tmp_path / "ds") if r["subject"] == "04"]
    assert {r["status"] for r in rows} == {"unreadable"} and all("not an image (a text file)" in r["reason"]
                                                                 for r in rows)


def test_summary_says_when_a_class_cannot_reach_a_split(tmp_path):
    src = tmp_path / "src"
    paths = generate_rafd_like(src, subjects=4, emotions=("Happy", "Fearful"), size=SMALL)
    for path in paths:
        if "fearful" in path.name and "_01_" not in path.name:
            path.unlink()  # one person only shows fear
    summary = crop(src, tmp_path / "ds", fractions=(0.5, 0.25, 0.25), **FAST)
    assert any("Valid has no Fearful" in w and "Test has no Fearful" in w for w in summary.warnings)
    assert "Fearful" in {r["emotion"] for r in read_manifest(tmp_path / "ds") if r["split"] == "Train"}
