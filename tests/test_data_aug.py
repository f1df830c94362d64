"""data_aug.py end to end on tiny hand-built Datasets: labels, determinism, Test, re-runs, --clean, bad input."""

import hashlib
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import data_aug
from efr.data import augment
from efr.io.manifest import AUGMENTED
from efr.data.augment_stage import augment_dataset
from efr.data.augmented import is_augmented_name
from efr.commands.cli import run
from efr.io.imageio import write_image
from efr.io.manifest import check_subject_disjoint, read_manifest, write_manifest

SUBJECTS = {"Train": ["01", "02"], "Valid": ["03"], "Test": ["04"]}
EMOTIONS = ("Happy", "Sad", "Angry")


def make_dataset(root, shape=(48, 48), manifest=True):
    """A Dataset like crop.py's: 4 subjects x 3 emotions, subject-disjoint splits, one row per photo."""
    rng = np.random.default_rng(0)
    rows = []
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width]
    for split, subjects in SUBJECTS.items():
        for emotion in EMOTIONS:
            for subject in subjects:
                rel = f"{split}/{emotion}/Rafd090_{subject}_Caucasian_female_{emotion.lower()}_frontal.png"
                base = np.stack([xx * 4, yy * 4, xx + yy], axis=-1) % 256
                image = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
                write_image(root / rel, image)
                rows.append({"source": f"raw/{Path(rel).name}", "subject": subject, "emotion": emotion,
                             "split": split, "output": rel, "status": "ok", "kind": "original"})
    if manifest:
        write_manifest(root, rows)
    return root


def files(root):
    """{relative path: sha256} of every file under root (manifest included, run info left out)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "augment.json"}


def originals(root):
    return {k: v for k, v in files(root).items() if k.endswith(".png") and "__aug-" not in k}


def cli(*args):
    return run(data_aug.main, [*map(str, args), "--quiet"])


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "Dataset")


def test_default_run_keeps_labels_subjects_and_shapes(dataset):
    before = originals(dataset)
    assert cli("--dataset", dataset, "--copies", 3) == 0
    rows = read_manifest(dataset)
    parents = {r["output"]: r for r in rows if r["kind"] != AUGMENTED}
    augmented = [r for r in rows if r["kind"] == AUGMENTED]
    assert len(augmented) == 3 * (len(SUBJECTS["Train"]) + len(SUBJECTS["Valid"])) * len(EMOTIONS)
    for row in augmented:
        parent = parents[row["parent"]]
        path = dataset / row["output"]
        assert path.parent == (dataset / parent["output"]).parent  # same split and emotion folder
        assert (row["split"], row["emotion"], row["subject"]) == (parent["split"], parent["emotion"],
                                                                  parent["subject"])
        assert row["status"] == "ok" and row["recipe"] == "default" and row["seed"] == "0" and row["transform"]
        assert is_augmented_name(path) and Path(row["parent"]).stem + "__aug-default-" in path.name
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert {r["split"] for r in augmented} == {"Train", "Valid"}
    check_subject_disjoint(rows)
    assert originals(dataset) == before


def test_same_seed_same_bytes_whatever_the_workers_and_another_seed_differs(tmp_path):
    one, two, other = (make_dataset(tmp_path / name) for name in ("one", "two", "other"))
    augment_dataset(one, seed=5, workers=1, progress=False)
    augment_dataset(two, seed=5, workers=2, progress=False)
    augment_dataset(other, seed=6, workers=2, progress=False)
    assert files(one) == files(two)
    aug_one = {k: v for k, v in files(one).items() if "__aug-" in k}
    aug_other = {k: v for k, v in files(other).items() if "__aug-" in k}
    assert len(aug_one) == len(aug_other) == 4 * 9
    assert set(aug_one.values()).isdisjoint(aug_other.values())


def test_worker_processes_write_the_same_bytes_as_threads(tmp_path):
    threads, processes = (make_dataset(tmp_path / name) for name in ("threads", "processes"))
    augment_dataset(threads, seed=3, copies=2, workers=2, progress=False)
    augment_dataset(processes, seed=3, copies=2, workers=2, executor="process", progress=False)
    assert files(threads) == files(processes)


def test_either_png_writer_gives_the_same_pixels(tmp_path):
    pytest.importorskip("fpng")
    fast, opencv = (make_dataset(tmp_path / name) for name in ("fpng", "opencv"))
    augment_dataset(fast, seed=3, copies=2, workers=1, png_writer="fpng", progress=False)
    assert cli("--dataset", opencv, "--seed", 3, "--copies", 2, "--png-writer", "opencv") == 0
    written = sorted(p.relative_to(fast).as_posix() for p in fast.rglob("*__aug-*.png"))
    assert len(written) == 2 * 9
    assert all(np.array_equal(cv2.imread(str(fast / rel)), cv2.imread(str(opencv / rel))) for rel in written)
    assert any((fast / rel).read_bytes() != (opencv / rel).read_bytes() for rel in written)


def test_test_split_is_never_touched(dataset):
    test_files = {k: v for k, v in files(dataset).items() if k.startswith("Test/")}
    assert cli("--dataset", dataset) == 0
    assert cli("--dataset", dataset, "--clean") == 0
    assert cli("--dataset", dataset, "--splits", "Test") == 2
    assert cli("--dataset", dataset, "--splits", "train", "test") == 2
    assert {k: v for k, v in files(dataset).items() if k.startswith("Test/")} == test_files


def test_rerun_changes_nothing_and_never_augments_augmented_files(dataset):
    assert cli("--dataset", dataset) == 0
    first = files(dataset)
    result = augment_dataset(dataset, progress=False)
    assert (result.written, result.already_done) == (0, 4 * 9)
    assert files(dataset) == first
    assert not [k for k in first if k.count("__aug-") > 1]


def test_more_copies_adds_to_the_first_ones_fewer_or_another_recipe_or_seed_is_refused(dataset, caplog):
    augment_dataset(dataset, copies=2, progress=False)
    two = files(dataset)
    result = augment_dataset(dataset, copies=3, progress=False)
    assert result.written == 9
    three = files(dataset)
    assert {k: v for k, v in three.items() if k in two and k != "manifest.csv"} == {
        k: v for k, v in two.items() if k != "manifest.csv"}
    with caplog.at_level(logging.ERROR):
        assert cli("--dataset", dataset, "--copies", 2) == 2
        assert cli("--dataset", dataset, "--recipe", "original") == 2
        assert cli("--dataset", dataset, "--seed", 1) == 2
    assert caplog.text.count("--clean") == 3
    assert files(dataset) == three


def test_clean_removes_exactly_the_augmented_files(dataset):
    before = files(dataset)
    assert cli("--dataset", dataset, "--recipe", "original") == 0
    # A suffixed file the manifest does not list, and an augmented row naming an original: both kept.
    stray = dataset / "Train/Happy/mine__aug-default-0-flip.png"
    shutil.copy(dataset / "Train/Happy/Rafd090_01_Caucasian_female_happy_frontal.png", stray)
    rows = read_manifest(dataset)
    victim = "Train/Sad/Rafd090_02_Caucasian_female_sad_frontal.png"
    rows.append({**next(r for r in rows if r["output"] == victim), "kind": AUGMENTED, "parent": victim})
    write_manifest(dataset, rows)

    assert cli("--dataset", dataset, "--clean") == 0
    after = files(dataset)
    assert {k: v for k, v in after.items() if k.endswith(".png") and k != stray.relative_to(dataset).as_posix()} \
        == {k: v for k, v in before.items() if k.endswith(".png")}
    assert stray.is_file()
    rows = read_manifest(dataset)
    assert [r["output"] for r in rows if r["kind"] == AUGMENTED] == [victim]
    assert len(rows) == 4 * 3 + 1  # the twelve originals and the kept row


def test_original_recipe_writes_the_twelve_named_outputs(dataset):
    assert cli("--dataset", dataset, "--recipe", "original", "--splits", "Train") == 0
    parent = dataset / "Train/Happy/Rafd090_01_Caucasian_female_happy_frontal.png"
    made = sorted(p.name for p in parent.parent.glob(parent.stem + "__aug-*"))
    assert made == sorted(f"{parent.stem}__aug-original-{k}-{name}.png"
                          for k, name in enumerate(augment.ORIGINAL_TRANSFORMS))
    source = cv2.imread(str(parent))
    flipped = cv2.imread(str(parent.parent / f"{parent.stem}__aug-original-0-flip_lr.png"))
    assert np.array_equal(flipped, cv2.flip(source, 1))
    binary = cv2.imread(str(parent.parent / f"{parent.stem}__aug-original-4-thresh_binary.png"), cv2.IMREAD_UNCHANGED)
    assert binary.shape == source.shape and set(np.unique(binary)) <= {0, 255}
    rows = [r for r in read_manifest(dataset) if r["kind"] == AUGMENTED]
    assert len(rows) == 12 * 2 * 3 and {r["split"] for r in rows} == {"Train"}
    assert {r["transform"] for r in rows} == set(augment.ORIGINAL_TRANSFORMS)


def test_original_recipe_rotates_non_square_photos_whole(tmp_path):
    dataset = make_dataset(tmp_path / "D", shape=(40, 64))
    assert cli("--dataset", dataset, "--recipe", "original", "--splits", "Valid") == 0
    parent = dataset / "Valid/Sad/Rafd090_03_Caucasian_female_sad_frontal.png"
    source = cv2.imread(str(parent))
    turned = cv2.imread(str(parent.parent / f"{parent.stem}__aug-original-2-rot90.png"))
    assert turned.shape == (64, 40, 3) and np.array_equal(turned, np.rot90(source))
    default = make_dataset(tmp_path / "E", shape=(40, 64))
    assert cli("--dataset", default) == 0
    shapes = {cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape for p in default.rglob("*__aug-*.png")}
    assert shapes == {(40, 64, 3)}


def test_an_interrupted_run_finishes_to_the_same_result(tmp_path, monkeypatch):
    fresh, broken = make_dataset(tmp_path / "fresh"), make_dataset(tmp_path / "broken")
    augment_dataset(fresh, progress=False)

    import efr.data.augment_stage as stage

    real, calls = stage.augment_photo, []

    def interrupted(source, outputs, png_writer):
        calls.append(source)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(source, outputs, png_writer)

    monkeypatch.setattr(stage, "augment_photo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        augment_dataset(broken, workers=1, progress=False)
    rows = read_manifest(broken)
    assert {r["status"] for r in rows if r["kind"] == AUGMENTED} == {"ok", "pending"}
    monkeypatch.setattr(stage, "augment_photo", real)
    augment_dataset(broken, progress=False)
    assert files(broken) == files(fresh)


def test_no_manifest_still_works_subject_from_rafd_names_else_unknown(tmp_path, caplog):
    dataset = make_dataset(tmp_path / "hand", manifest=False)
    write_image(dataset / "Train/Happy/holiday.png", np.full((48, 48, 3), 90, np.uint8))
    with caplog.at_level(logging.WARNING):
        assert cli("--dataset", dataset, "--copies", 1) == 0
    assert "no manifest" in caplog.text and "1 photo(s) have no subject id" in caplog.text
    rows = read_manifest(dataset)
    assert len([r for r in rows if r["kind"] == AUGMENTED]) == 10
    assert len([r for r in rows if r["kind"] == "original"]) == 10  # Train and Valid photos now listed
    subjects = {Path(r["output"]).name.split("__aug-")[0]: r["subject"] for r in rows}
    assert subjects["holiday.png"] == subjects["holiday"] == ""
    assert subjects["Rafd090_03_Caucasian_female_sad_frontal.png"] == subjects[
        "Rafd090_03_Caucasian_female_sad_frontal"] == "03"
    check_subject_disjoint(rows)
    assert cli("--dataset", dataset, "--clean") == 0
    assert not list(dataset.rglob("*__aug-*"))


def test_unreadable_photo_is_skipped_and_reported(dataset, caplog):
    bad = dataset / "Train/Happy/broken.png"
    bad.write_bytes(b"not a png at all")
    with caplog.at_level(logging.WARNING):
        assert cli("--dataset", dataset) == 0
    assert "broken.png" in caplog.text and "1 unreadable" in caplog.text
    assert "broken.png: not an image (a text file)" in caplog.text
    rows = read_manifest(dataset)
    assert not [r for r in rows if r["parent"] == "Train/Happy/broken.png"]
    assert len([r for r in rows if r["kind"] == AUGMENTED]) == 4 * 9
    assert bad.read_bytes() == b"not a png at all"


def test_all_photos_unreadable_is_an_error(tmp_path):
    dataset = tmp_path / "D"
    (dataset / "Train/Happy").mkdir(parents=True)
    (dataset / "Train/Happy/a.png").write_bytes(b"junk")
    assert cli("--dataset", dataset, "--splits", "Train") == 2
    assert not list(dataset.rglob("*__aug-*"))


def test_bad_folders_get_clear_messages_and_exit_codes(tmp_path, dataset, caplog):
    with caplog.at_level(logging.WARNING):
        assert cli("--dataset", tmp_path / "missing") == 2
        assert "no such Dataset folder" in caplog.text
        shutil.rmtree(dataset / "Valid")
        assert cli("--dataset", dataset, "--splits", "Valid") == 2
        assert "Valid: no such folder" in caplog.text
        assert cli("--dataset", dataset, "--splits", "Holdout") == 2
        assert cli("--dataset", dataset, "--clean", "--splits", "Holdout") == 2
        assert "unknown split" in caplog.text
        (dataset / "Train/Sad").rename(dataset / "Train/Misc")
        (dataset / "Train/Fearful").mkdir()
        assert cli("--dataset", dataset, "--copies", 1) == 0
    assert "Misc: not one of the eight emotions" in caplog.text
    assert "Fearful: empty class folder" in caplog.text
    assert not list((dataset / "Train/Misc").glob("*__aug-*"))
    assert len(list((dataset / "Train/Happy").glob("*__aug-*"))) == 2


def test_only_unknown_class_folders_is_an_error(tmp_path):
    dataset = tmp_path / "D"
    write_image(dataset / "Train/Misc/a.png", np.zeros((8, 8, 3), np.uint8))
    assert cli("--dataset", dataset) == 2


def test_clean_with_splits_cleans_only_those(dataset):
    assert cli("--dataset", dataset, "--copies", 1) == 0
    assert cli("--dataset", dataset, "--clean", "--splits", "Train") == 0
    assert not list((dataset / "Train").rglob("*__aug-*"))
    assert len(list((dataset / "Valid").rglob("*__aug-*"))) == 3
    assert {r["split"] for r in read_manifest(dataset) if r["kind"] == AUGMENTED} == {"Valid"}


def test_only_a_few_photos_are_handed_to_the_workers_at_a_time(tmp_path, monkeypatch):
    """Memory stays flat: the pool never holds every photo's job at once."""
    import concurrent.futures
    import time

    import efr.data.augment_stage as stage

    dataset = make_dataset(tmp_path / "ds")
    submitted, seen = [], []

    class CountingPool(concurrent.futures.ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            submitted.append(1)
            return super().submit(*args, **kwargs)

    real = stage.augment_photo

    def first_slow(source, outputs, png_writer):
        if not seen:
            time.sleep(0.3)  # time enough for an eager loop to queue every photo
            seen.append(len(submitted))
        return real(source, outputs, png_writer)

    monkeypatch.setattr(stage, "_make_executor", lambda kind, workers: CountingPool(max_workers=workers))
    monkeypatch.setattr(stage, "augment_photo", first_slow)
    result = augment_dataset(dataset, workers=1, progress=False)
    assert result.photos == 9 and len(submitted) == 9
    assert seen[0] <= 4 + 1  # window of 4 per worker (plus the one being handed over)
