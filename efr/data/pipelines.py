"""tf.data pipelines from a Dataset folder: file lists, labels, streaming decode.

A Dataset folder (made by crop.py, maybe extended by data_aug.py) looks like::

    Dataset/{Train,Valid,Test}/<Emotion>/<name>.png     8-bit PNG faces
    Dataset/manifest.csv                                 subject, kind, parent... per file

Two layers live here:

* file lists (no TensorFlow): ``scan_dataset`` walks the folders and joins each file
  with its manifest row (subject, kind original/augmented, parent); ``list_split``
  gives ``(paths, labels, class_names)`` for one split; ``load_splits`` checks that
  Train, Valid and Test agree on their classes.  Class order is always the canonical
  one of efr.io.emotions, never the order of a directory listing.
* pipelines (TensorFlow): ``make_dataset`` streams files from disk, decodes them in
  parallel, caches the decoded uint8 images in memory when they fit, shuffles,
  batches, optionally augments on the fly, and prefetches.  Images are yielded as
  float32 RGB in [0, 255] (every EFR model scales inside), labels one-hot.  The
  whole set never sits in memory as float: only the uint8 cache (if it fits) and a
  few batches do.

PNG files written by OpenCV hold RGB in the usual PNG channel order (OpenCV swaps BGR
to RGB while encoding), so ``tf.io.decode_image`` gives RGB and no channel swap is
needed; tests/test_data.py checks this on a file written with cv2.imwrite.
"""

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from efr.io.emotions import UnknownEmotionError, canonical_emotion, sorted_emotions
from efr.io.errors import EFRError
from efr.io.imageio import diagnose_file, image_format, is_image_file
from efr.data.augmented import AUGMENTED_MARKER
from efr.io.manifest import AUGMENTED, ORIGINAL, SPLITS, check_subject_disjoint, read_manifest
from efr.io.rafd import rafd_subject

log = logging.getLogger(__name__)

# Formats tf.io.decode_image reads (it has no TIFF decoder).
TF_DECODABLE = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
DEFAULT_CACHE_BUDGET = 512 * 2**20  # bytes of decoded uint8 images kept in memory by cache="auto"


@dataclass(frozen=True)
class Sample:
    """One image file of a Dataset folder and what the manifest says about it."""

    path: Path
    split: str  # Train, Valid or Test (the folder it is in)
    emotion: str  # canonical emotion (from its folder)
    subject: str  # "" when unknown (no manifest row, not a RaFD name)
    kind: str  # original or augmented
    parent: str  # for augmented copies: the original's path relative to the Dataset folder
    fold: str  # crop.py's cross-validation fold, "" when none
    rel: str  # path relative to the Dataset folder, posix


# ----------------------------------------------------------------------------------
# File lists


def check_dataset_dir(dataset_dir):
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise EFRError(
            f"dataset folder {dataset_dir} not found: make it with crop.py "
            "(python crop.py --src PHOTOS --dst Dataset) or pass --dataset"
        )
    return dataset_dir


def _emotion_folders(split_dir, problems):
    """[(canonical emotion, folder)] of a split folder; unknown or doubled names go to ``problems``."""
    found = {}
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            emotion = canonical_emotion(folder.name)
        except UnknownEmotionError as err:
            problems.append(
                f"{folder}: folder name {folder.name!r} is not an emotion ({err}); "
                "rename it to one of the eight classes or move it out of the Dataset folder"
            )
            continue
        if emotion in found:
            problems.append(f"{split_dir}: folders {found[emotion].name!r} and {folder.name!r} both mean {emotion}")
            continue
        if emotion != folder.name:
            log.info("%s: folder %r read as %s", split_dir, folder.name, emotion)
        found[emotion] = folder
    return [(emotion, found[emotion]) for emotion in sorted_emotions(found)]


def raise_problems(problems, dataset_dir):
    """One EFRError listing every problem found (one line, numbered), or nothing when there are none."""
    if len(problems) == 1:
        raise EFRError(problems[0])
    if problems:
        listed = " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise EFRError(f"{len(problems)} problems with the dataset {dataset_dir}: {listed}")


def scan_dataset(dataset_dir, splits=SPLITS, require_all=True, problems=None):
    """Every image file of the given splits as Samples, joined with the manifest.

    The folders are the truth about which files exist and their labels; the manifest
    adds subject, kind and parent.  A missing Dataset or split folder (when
    ``require_all``), an unknown emotion folder or an empty class folder is a problem:
    all of them are found in one pass and raised together as one EFRError, or, when a
    ``problems`` list is given, appended to it for the caller to raise with its own.
    """
    dataset_dir = check_dataset_dir(dataset_dir)
    collect = problems is not None
    problems = [] if problems is None else problems
    rows = read_manifest(dataset_dir)
    if rows:
        try:
            check_subject_disjoint([r for r in rows if r["status"] in ("ok", "")])
        except EFRError as err:
            problems.append(str(err))
    by_output = {r["output"]: r for r in rows if r["output"]}
    samples = []
    for split in splits:
        split_dir = dataset_dir / split
        if not split_dir.is_dir():
            if require_all:
                present = [s for s in SPLITS if (dataset_dir / s).is_dir()]
                problems.append(
                    f"split folder {split_dir} not found (found: {', '.join(present) or 'none'}): "
                    f"a Dataset needs {', '.join(SPLITS)}; re-run crop.py, or use --folds K to "
                    "cross-validate over the photos there are"
                )
            continue
        folders = _emotion_folders(split_dir, problems)
        if not folders:
            problems.append(f"{split_dir} has no emotion folders: expected {split_dir}/<Emotion>/<image>.png")
        for emotion, folder in folders:
            files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
            if not files:
                problems.append(f"class folder {folder} has no images: add images or remove the empty folder")
            for path in files:
                rel = path.relative_to(dataset_dir).as_posix()
                row = by_output.get(rel, {})
                augmented = row.get("kind") == AUGMENTED or AUGMENTED_MARKER in path.stem
                samples.append(
                    Sample(
                        path=path,
                        split=split,
                        emotion=emotion,
                        subject=row.get("subject") or rafd_subject(path.stem.split(AUGMENTED_MARKER)[0]),
                        kind=AUGMENTED if augmented else ORIGINAL,
                        parent=row.get("parent", ""),
                        fold=row.get("fold", ""),
                        rel=rel,
                    )
                )
    if rows:
        on_disk = {s.rel for s in samples}
        missing = [r["output"] for r in rows if r["output"] and r["status"] in ("ok", "") and r["output"] not in on_disk
                   and r["split"] in splits]
        if missing:
            log.warning("%d files listed in %s/manifest.csv are missing (e.g. %s); training uses the files there are",
                        len(missing), dataset_dir, missing[0])
    if not collect:
        raise_problems(problems, dataset_dir)
    return samples


def class_names_of(samples):
    return sorted_emotions({s.emotion for s in samples})


def select(samples, split=None, include_augmented=True):
    """The samples of one split, with or without data_aug.py's copies."""
    return [
        s for s in samples
        if (split is None or s.split == split) and (include_augmented or s.kind == ORIGINAL)
    ]


def labels_of(samples, class_names):
    index = {name: i for i, name in enumerate(class_names)}
    missing = sorted({s.emotion for s in samples} - set(index))
    if missing:
        raise EFRError(f"classes {', '.join(missing)} are not among the model's classes {', '.join(class_names)}")
    return [index[s.emotion] for s in samples]


def list_split(dataset_dir, split, include_augmented=True, class_names=None):
    """Files of one split of a Dataset folder: ``(paths, labels, class_names)``.

    Labels are indices into ``class_names``: the canonical order of the classes
    present in the split, unless ``class_names`` is given (e.g. a model's own).  Test
    files marked as augmented are always left out.
    """
    samples = select(scan_dataset(dataset_dir, (split,)), split, include_augmented and split != "Test")
    names = list(class_names) if class_names is not None else class_names_of(samples)
    return [s.path for s in samples], labels_of(samples, names), names


def check_same_classes(samples, splits=SPLITS):
    """Raise EFRError when the splits do not hold the same classes; return the class names."""
    per_split = {split: set(class_names_of(select(samples, split))) for split in splits}
    every = set().union(*per_split.values())
    problems = [
        f"{split} lacks {', '.join(sorted_emotions(every - names))}"
        for split, names in per_split.items() if names != every
    ]
    if problems:
        raise EFRError(
            "the splits hold different classes (" + "; ".join(problems) + "): every class needs images "
            "in Train, Valid and Test; re-run crop.py with more subjects, or remove the class everywhere"
        )
    return sorted_emotions(every)


def count_by(samples, *keys):
    """Nested counts, e.g. count_by(samples, "split", "emotion") -> {split: {emotion: n}}."""
    if len(keys) == 1:
        return dict(sorted(Counter(getattr(s, keys[0]) for s in samples).items()))
    groups = defaultdict(list)
    for s in samples:
        groups[getattr(s, keys[0])].append(s)
    return {k: count_by(v, *keys[1:]) for k, v in sorted(groups.items())}


# ----------------------------------------------------------------------------------
# Checking files before TensorFlow sees them


def quick_check_image(path):
    """Why ``path`` cannot be decoded by tf.io.decode_image, or "" when it looks fine.

    Reads only the first and last bytes: catches empty, truncated, non-image and
    unsupported-format files, the common damage, without decoding anything.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TF_DECODABLE:
        return f"{suffix} files are not supported by the training pipeline (use png or jpg)"
    problem = diagnose_file(path)
    if problem:
        return problem
    with open(path, "rb") as handle:
        kind = image_format(handle.read(16))
    if kind not in ("png", "jpeg", "bmp", "gif"):
        return f"a {kind.upper()} image under a {suffix} name: TensorFlow reads PNG, JPEG, BMP or GIF; convert it"
    return ""


def drop_unreadable(samples):
    """(readable samples, [(path, reason)] of the rest), logging a count of skipped files."""
    good, bad = [], []
    for sample in samples:
        reason = quick_check_image(sample.path)
        if reason:
            bad.append((sample.path, reason))
        else:
            good.append(sample)
    if bad:
        log.warning("skipped %d unreadable image(s), e.g. %s: %s", len(bad), bad[0][0], bad[0][1])
    return good, bad


def find_undecodable(paths):
    """The first file TensorFlow cannot decode, with TensorFlow's reason; (None, "") if none.

    Used after a decode error in the pipeline, whose message does not name the file.
    """
    import tensorflow as tf

    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as err:
            return Path(path), err.message.splitlines()[0]
    return None, ""


# ----------------------------------------------------------------------------------
# Pipelines


def decoded_bytes(count, image_size):
    return int(count) * int(image_size) * int(image_size) * 3


def resolve_cache(cache, count, image_size, budget=DEFAULT_CACHE_BUDGET):
    """True when the decoded images should be cached in memory.

    ``cache``: True/"memory" (always), False/"none" (never), "auto" (when the uint8
    images fit in ``budget`` bytes; beyond it the pipeline streams from disk every
    epoch and the operating system's file cache keeps the PNGs warm).
    """
    if cache in (True, "memory"):
        return True
    if cache in (False, None, "none"):
        return False
    if cache == "auto":
        return decoded_bytes(count, image_size) <= budget
    raise ValueError(f"cache must be 'auto', 'memory' or 'none', got {cache!r}")


def decode_image(path, image_size):
    """Read one image file as uint8 RGB (image_size, image_size, 3), resizing only when needed."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    size = tf.constant([image_size, image_size])

    def resized():
        out = tf.image.resize(image, size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

    image = tf.cond(tf.reduce_all(tf.equal(tf.shape(image)[:2], size)), lambda: image, resized)
    image.set_shape((image_size, image_size, 3))
    return image


def make_image_dataset(paths, image_size, batch_size, flip=False):
    """Batches of float32 RGB [0, 255] images from ``paths``, in order, for prediction (``flip``: mirrored)."""
    import numpy as np
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(np.array([str(p) for p in paths]))
    data = data.map(lambda path: decode_image(path, image_size), num_parallel_calls=tf.data.AUTOTUNE)
    if flip:
        data = data.map(tf.image.flip_left_right, num_parallel_calls=tf.data.AUTOTUNE)
    data = data.batch(batch_size).map(lambda images: tf.cast(images, tf.float32))
    return data.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(count, batch_size, drop_remainder=False):
    if drop_remainder:
        return max(int(count) // int(batch_size), 1)
    return -(-int(count) // int(batch_size))


def make_augmenter(seed=0, rotation=0.05, shift=0.08, zoom=0.1, contrast=0.2, brightness=0.15):
    """On-the-fly training augmentation with Keras preprocessing layers.

    Runs inside the tf.data pipeline on float [0, 255] batches (never part of a saved
    model).  ``rotation`` is a fraction of a full turn (0.05 = +-18 degrees).
    """
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(rotation, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomTranslation(shift, shift, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomZoom(zoom, zoom, fill_mode="reflect", seed=seed + 3),
            keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seed + 4),
            keras.layers.RandomBrightness(brightness, value_range=(0, 255), seed=seed + 5),
        ],
        name="online_augmentation",
    )


def make_dataset(paths, labels, num_classes, image_size, batch_size, shuffle=False, seed=0, augment=None,
                 cache=True, start_epoch=None, shard=None):
    """A batched tf.data.Dataset of (float32 RGB [0, 255] images, one-hot labels).

    ``paths``/``labels``: files and class indices (see ``list_split``).  ``shuffle``
    reshuffles every epoch with ``seed``.  ``augment``: None, "online" (the default
    augmenter) or a callable taking a float batch and ``training=True``; applied after
    caching, so each epoch sees new variants.  ``cache``: see ``resolve_cache``;
    decoded uint8 images are cached (4x smaller than float32), never floats.

    ``start_epoch`` (training, with ``shuffle``): an endless dataset, epoch after epoch
    in the orders one seeded shuffle draws, starting with epoch ``start_epoch`` of that
    sequence (the ones before are drawn and skipped); fit it with
    ``steps_per_epoch=steps_per_epoch(len(paths), batch_size)``.  Epoch k is then the same
    batches whether the fit started at epoch 0 or was resumed at k.  (Reshuffling per
    iterator, the other way, cannot be replayed: Keras makes a version-dependent number
    of iterators per epoch.)

    ``shard`` (process, processes), for training over several processes: every batch is
    full (an epoch's last, smaller batch is dropped) and this process gets its
    1/processes slice of each, so together the processes see the same batches.
    """
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    if not len(paths):
        raise EFRError("no images to make a dataset from")
    data = _decoded_batches(paths, labels, image_size, batch_size, shuffle, seed, cache,
                            drop_remainder=shard is not None)
    if start_epoch is not None:
        if not shuffle:
            raise ValueError("start_epoch is for shuffled training data")
        data = data.repeat()  # every repetition reshuffles: epoch after epoch from one seeded sequence
        if start_epoch:
            data = data.skip(int(start_epoch) * steps_per_epoch(len(paths), batch_size, shard is not None))
    if shard is not None:
        data = _shard_batches(data, shard, batch_size)
    if augment == "online":
        augment = make_augmenter(seed)
    return _float_batches(data, num_classes, augment)


def _decoded_batches(paths, labels, image_size, batch_size, shuffle, seed, cache, drop_remainder):
    """Batches of (uint8 images, class indices), decoded once and cached when ``cache`` allows, shuffled."""
    import numpy as np
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    count = len(paths)
    data = tf.data.Dataset.from_tensor_slices(
        (np.array([str(p) for p in paths]), np.asarray(labels, dtype=np.int32))
    )

    def load(path, label):
        return decode_image(path, image_size), label

    cached = resolve_cache(cache, count, image_size)
    if cached:
        data = data.map(load, num_parallel_calls=autotune).cache()
    if shuffle:  # cached: the decoded images are shuffled, not re-read; streamed: only file names wait
        data = data.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if not cached:
        data = data.map(load, num_parallel_calls=autotune)
    return data.batch(batch_size, drop_remainder=drop_remainder)


def _shard_batches(data, shard, batch_size):
    """This process's slice of each batch; ``shard``: (process, processes)."""
    process, processes = shard
    if batch_size % processes:
        raise EFRError(f"--batch-size {batch_size}: must be a multiple of the {processes} processes")
    part = batch_size // processes
    return data.map(lambda images, label: (images[process * part:(process + 1) * part],
                                           label[process * part:(process + 1) * part]))


def _float_batches(data, num_classes, augment):
    """(float32 images, augmented by ``augment`` when given, one-hot labels), prefetched."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE

    def to_float(images, label):
        images = tf.cast(images, tf.float32)
        if augment is not None:
            images = augment(images, training=True)
        return images, tf.one_hot(label, num_classes)

    # Keras' random layers draw from one seed-state variable: calls running in
    # parallel would race on it and an epoch's augmentation would not repeat with the
    # seed.  One batch at a time keeps it repeatable; the ops themselves still use
    # every core.
    data = data.map(to_float, num_parallel_calls=None if augment is not None else autotune)
    # tf.data's autotuning thread sleeps longer and longer as a run goes on, and the end of an epoch
    # waits for it while the epoch's iterator is destroyed: on 2 cores, ~15 s of idle machine at the end
    # of about half the 25 s epochs (7 epochs of the seed CNN at 256 px: 237 s with it, 172 s without;
    # BENCHMARKS.md, round 6).  The AUTOTUNE values above then take tf.data's fixed defaults; the epochs
    # without a stall ran as fast either way (22.6-27.6 s against 23.9-25.9 s).
    options = tf.data.Options()
    options.autotune.enabled = False
    return data.prefetch(autotune).with_options(options)
