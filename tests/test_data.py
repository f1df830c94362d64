"""efr.data.pipelines: file lists, class order, bad Dataset folders, and the tf.data pipeline."""

import shutil

import cv2
import numpy as np
import pytest

from efr.data import pipelines as data
from efr.io.emotions import EMOTIONS
from efr.io.errors import EFRError
from efr.io.imageio import write_image
from efr.io.manifest import read_manifest, write_manifest
from train_fixtures import make_tiny_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """5 subjects x 8 emotions, one gaze, 32 px, one augmented copy per Train/Valid photo."""
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), subjects=5, size=32, gazes=("frontal",), augmented=1)


@pytest.fixture
def copy_of(tiny, tmp_path):
    def copy():
        target = tmp_path / "Dataset"
        shutil.copytree(tiny, target)
        return target

    return copy


def test_list_split_uses_canonical_class_order_and_right_labels(tiny):
    paths, labels, names = data.list_split(tiny, "Train")
    assert names == list(EMOTIONS)
    assert len(paths) == len(labels) == 3 * 8 * 2  # 3 Train subjects, 8 emotions, original + copy
    for path, label in zip(paths, labels):
        assert path.parent.name == names[label]
    # A model's own class list decides the labels, whatever the split holds.
    subset = ["Surprised", "Angry", "Contemptuous", "Disgusted", "Fearful", "Happy", "Neutral", "Sad"]
    paths2, labels2, names2 = data.list_split(tiny, "Train", class_names=subset)
    assert names2 == subset
    assert [subset[i] for i in labels2] == [names[i] for i in labels]


def test_augmented_files_are_marked_and_never_in_test(tiny, copy_of):
    originals, _, _ = data.list_split(tiny, "Train", include_augmented=False)
    every, _, _ = data.list_split(tiny, "Train", include_augmented=True)
    assert len(every) == 2 * len(originals)
    assert all("__aug-" not in p.name for p in originals)
    samples = data.scan_dataset(tiny)
    copies = [s for s in samples if s.kind == data.AUGMENTED]
    assert copies and all(s.parent and s.subject for s in copies)
    # A copy that ended up in Test is left out of the test set.
    dataset = copy_of()
    test_file = next((dataset / "Test" / "Happy").iterdir())
    shutil.copy(test_file, test_file.with_name(test_file.stem + "__aug-default-0-x.png"))
    paths, _, _ = data.list_split(dataset, "Test", include_augmented=True)
    assert all("__aug-" not in p.name for p in paths)


def test_scan_without_manifest_reads_subjects_from_rafd_names(copy_of):
    dataset = copy_of()
    (dataset / "manifest.csv").unlink()
    samples = data.scan_dataset(dataset)
    assert all(s.subject for s in samples)
    assert {s.kind for s in samples} == {"original", "augmented"}  # told apart by the __aug- name marker


def test_emotion_folder_aliases_are_read_as_canonical(copy_of):
    dataset = copy_of()
    for split in ("Train", "Valid", "Test"):
        (dataset / split / "Happy").rename(dataset / split / "happiness")
    (dataset / "manifest.csv").unlink()
    _, _, names = data.list_split(dataset, "Valid")
    assert names == list(EMOTIONS)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: shutil.rmtree(d), "not found"),
        (lambda d: shutil.rmtree(d / "Valid"), "Valid not found"),
        (lambda d: [p.unlink() for p in (d / "Train" / "Sad").iterdir()], "has no images"),
        (lambda d: (d / "Train" / "Bored").mkdir(), "not an emotion"),
    ],
    ids=["no-dataset", "no-split", "empty-class", "unknown-class"],
)
def test_bad_dataset_folders_give_clear_errors(copy_of, damage, message):
    dataset = copy_of()
    damage(dataset)
    with pytest.raises(EFRError, match=message):
        data.scan_dataset(dataset)


def test_classes_must_match_across_splits(copy_of):
    dataset = copy_of()
    shutil.rmtree(dataset / "Test" / "Fearful")
    samples = data.scan_dataset(dataset)
    with pytest.raises(EFRError, match="Test lacks Fearful"):
        data.check_same_classes(samples)


def test_leaking_manifest_is_refused(copy_of):
    dataset = copy_of()
    rows = read_manifest(dataset)
    test_subject = next(r["subject"] for r in rows if r["split"] == "Test")
    for row in rows:
        if row["split"] == "Train":
            row["subject"] = test_subject
            break
    write_manifest(dataset, rows)
    with pytest.raises(EFRError, match="both"):
        data.scan_dataset(dataset)


def test_unreadable_files_are_skipped_with_reasons(copy_of, caplog):
    dataset = copy_of()
    folder = dataset / "Train" / "Happy"
    good = next(folder.iterdir())
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(good.read_bytes()[:100])
    (folder / "text.png").write_bytes(b"hello, not an image at all" * 4)
    (folder / "scan.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    samples = data.scan_dataset(dataset)
    kept, skipped = data.drop_unreadable(samples)
    reasons = {p.name: why for p, why in skipped}
    assert set(reasons) == {"empty.png", "truncated.png", "text.png", "scan.tif"}
    assert "truncated" in reasons["truncated.png"] and "empty" in reasons["empty.png"]
    assert reasons["text.png"] == "not an image (a text file)"  # what it is, not "truncated"
    assert len(kept) == len(samples) - 4
    assert "skipped 4 unreadable" in caplog.text


def test_find_undecodable_names_a_file_damaged_in_the_middle(tmp_path):
    good = tmp_path / "good.png"
    write_image(good, np.full((16, 16, 3), 128, np.uint8))
    bad = tmp_path / "bad.png"
    raw = bytearray(good.read_bytes())
    raw[40:60] = b"\x00" * 20  # header and end marker intact: passes the quick check
    bad.write_bytes(bytes(raw))
    assert data.quick_check_image(bad) == ""
    path, reason = data.find_undecodable([good, bad])
    assert path == bad and reason
    assert data.find_undecodable([good]) == (None, "")


def test_pipeline_yields_rgb_float_batches_one_hot(tmp_path):
    # OpenCV writes BGR arrays; the PNG holds RGB; tf must give RGB back.
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[:, :, 2] = 200  # red in OpenCV's BGR order
    bgr[:, :, 0] = 10  # a little blue
    path = tmp_path / "red.png"
    assert cv2.imwrite(str(path), bgr)
    images, labels = next(iter(data.make_dataset([path, path], [1, 2], 3, 24, batch_size=2, cache=False)))
    assert images.dtype.name == "float32" and tuple(images.shape) == (2, 24, 24, 3)  # resized to 24 x 24
    pixel = images.numpy()[0, 12, 12]
    assert pixel[0] == pytest.approx(200, abs=1) and pixel[2] == pytest.approx(10, abs=1)  # R, G, B order
    assert labels.numpy().tolist() == [[0, 1, 0], [0, 0, 1]]


def test_pipelines_run_without_tf_data_autotuning(tiny):
    # Its thread stalled the end of about half the long epochs by ~15 s on 2 cores (BENCHMARKS.md, round 6).
    paths, labels = data.list_split(tiny, "Train")[:2]
    for kwargs in ({"shuffle": True}, {"shuffle": True, "augment": "online"}, {"cache": False}):
        dataset = data.make_dataset(paths, labels, 8, 16, batch_size=4, **kwargs)
        assert dataset.options().autotune.enabled is False


def test_shuffle_repeats_with_seed_and_reshuffles_each_epoch(tiny):
    paths, labels, names = data.list_split(tiny, "Train")

    def epochs(seed, cache):
        pipeline = data.make_dataset(paths, labels, len(names), 32, batch_size=8, shuffle=True, seed=seed, cache=cache)
        return [np.concatenate([y.numpy().argmax(1) for _, y in pipeline]) for _ in range(2)]

    first, second = epochs(3, True)
    assert sorted(first.tolist()) == sorted(labels)  # every image once per epoch
    assert first.tolist() != second.tolist()  # a new order each epoch
    again = epochs(3, True)
    assert again[0].tolist() == first.tolist() and again[1].tolist() == second.tolist()
    streamed = epochs(3, False)
    assert sorted(streamed[0].tolist()) == sorted(labels)


def test_online_augmentation_changes_training_images_only(tiny):
    paths, labels, names = data.list_split(tiny, "Train", include_augmented=False)
    plain = data.make_dataset(paths, labels, len(names), 32, batch_size=24, cache=False)
    augmented = data.make_dataset(paths, labels, len(names), 32, batch_size=24, cache=False, augment="online", seed=1)
    x_plain = next(iter(plain))[0].numpy()
    x_aug = next(iter(augmented))[0].numpy()
    assert x_aug.shape == x_plain.shape and x_aug.dtype == np.float32
    assert 0.0 <= x_aug.min() and x_aug.max() <= 255.0
    changed = np.abs(x_aug - x_plain).reshape(len(x_plain), -1).mean(axis=1) > 1.0
    assert changed.mean() > 0.5  # most images altered
    assert np.array_equal(next(iter(plain))[0].numpy(), x_plain)  # without augment: the same every time


def test_cache_auto_follows_the_memory_budget():
    assert data.resolve_cache("auto", 100, 64) is True
    assert data.resolve_cache("auto", 10_000, 256, budget=512 * 2**20) is False  # 1.9 GB of uint8
    assert data.resolve_cache("memory", 10_000, 256) is True
    assert data.resolve_cache("none", 1, 8) is False
    with pytest.raises(ValueError):
        data.resolve_cache("disk", 1, 8)


def test_prediction_pipeline_keeps_file_order(tiny):
    paths, _, _ = data.list_split(tiny, "Test")
    batches = list(data.make_image_dataset(paths, 32, batch_size=5))
    images = np.concatenate([b.numpy() for b in batches])
    assert len(images) == len(paths)
    expected = cv2.imread(str(paths[3]))[:, :, ::-1].astype(np.float32)
    assert np.array_equal(images[3], expected)
