"""One unit of training: build the model (Keras or fusion), fit it on one split, predict the held-out
photos, and the file of those predictions."""

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from efr.crop.destination import read_settings as read_crop_settings
from efr.data import pipelines as efr_data
from efr.io.imageio import write_text_atomic
from efr.models.build import build_model
from efr.models.fusion import FusionBuilt
from efr.models.modelio import load_model, save_model
from efr.train.fit import fit_model, named_decode_errors
from efr.train.settings import is_fusion

log = logging.getLogger(__name__)

PREDICT_BATCH_SIZE = 64


def predict_paths(model, paths, image_size, batch_size=PREDICT_BATCH_SIZE, tta="none"):
    """Class probabilities (n, classes) of a model for image files, in order.

    ``tta="flip"``: the mean of the probabilities of each face and its mirror image.
    """
    if not len(paths):
        return np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
    # Called eagerly, batch by batch: model.predict would build (trace) a new predict
    # function for every model, which cross-validation makes once a fold, and TensorFlow
    # warns about such repeated tracing ("triggered tf.function retracing").
    with named_decode_errors(paths):
        probs = _predict_eagerly(model, efr_data.make_image_dataset(paths, image_size, batch_size))
        if tta == "flip":
            mirrored = _predict_eagerly(model, efr_data.make_image_dataset(paths, image_size, batch_size, flip=True))
            probs = (probs + mirrored) / 2.0
    return probs


def _predict_eagerly(model, batches):
    return np.concatenate([np.asarray(model(images, training=False)) for images in batches]).astype(np.float32)


def predict_split(model_path, dataset_dir, split="Test", include_augmented=False, batch_size=PREDICT_BATCH_SIZE):
    """A saved model's predictions on one split of a Dataset folder.

    Returns (paths, true class indices, probabilities, class names); labels use the
    model's own class order (from its efr.json).
    """
    model, meta = load_model(model_path)
    class_names = list(meta["class_names"])
    paths, labels, _ = efr_data.list_split(dataset_dir, split, include_augmented, class_names=class_names)
    size = int(meta["image_size"][0])
    return paths, np.asarray(labels), predict_paths(model, paths, size, batch_size), class_names


def predictions_csv(paths, y_true, probs, class_names, extra=None):
    """CSV text: path, true, predicted, confidence, one probability column per class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = extra or {}
    writer.writerow(["path", *extra, "true", "predicted", "confidence", *[f"p_{c}" for c in class_names]])
    for i, path in enumerate(paths):
        row = probs[i]
        pred = int(np.argmax(row))
        writer.writerow([str(path), *[v[i] for v in extra.values()], class_names[y_true[i]], class_names[pred],
                         f"{row[pred]:.6f}", *[f"{p:.6f}" for p in row]])
    return buffer.getvalue()


def _model_meta(built, class_names, settings, run_name):
    meta = dict(getattr(built, "meta", {}) or {})
    meta.update(
        class_names=list(class_names),
        image_size=[built.image_size, built.image_size],
        model=meta.get("model", settings.model),
        input="RGB float32 in [0, 255], scaled inside the model",
        trained_by="efe_cnn.py",
        tta=settings.tta,
        run=run_name,
        dataset=str(settings.dataset),
        seed=settings.seed,
    )
    # crop.py's settings travel with the model, so predict.py cuts faces exactly as in training.
    crop_settings = read_crop_settings(settings.dataset)
    if crop_settings:
        meta["crop"] = crop_settings
    return meta


def train_batch(settings):
    """The batch the training set must fill: the fusion head trains on all rows at once."""
    return 1 if is_fusion(settings) else settings.batch_size


def _build(settings, num_classes, strategy):
    options = {}
    if is_fusion(settings):
        options = {"backbone": settings.backbone, "parts": settings.fusion_parts.split(","),
                   "subject_norm": settings.subject_norm}
    with strategy.scope():
        return build_model(settings.model, num_classes, settings.image_size, settings.weights, **options)


def fit_fusion_split(built, train, valid, class_names, settings, meta, out_dir=None, save_files=True):
    """--model fusion's counterpart of fit_model: features once (cached), the head in seconds."""
    from efr.models import fusion

    history, fit = fusion.fit_fusion(built, train, valid, class_names, settings.dataset, settings.seed,
                                     progress=log.isEnabledFor(logging.INFO))  # no bar with --quiet
    meta.update(fusion=fusion.fusion_meta(built), image_size=[built.image_size, built.image_size])
    if out_dir is not None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        write_text_atomic(Path(out_dir) / "history.csv", buffer.getvalue())
    if save_files:
        save_model(built.model, Path(out_dir) / "best.keras", meta)
        save_model(built.model, Path(out_dir) / "last.keras", meta)
    return fit


def predict_samples(built, samples, settings, where="Test"):
    """{"probs": (n, classes)} for a split's samples; fusion --subject-norm adds "probs_plain"."""
    if isinstance(built, FusionBuilt):
        from efr.models import fusion

        return fusion.predict_fusion(built, samples, settings.dataset, where=where, tta=settings.tta)
    return {"probs": predict_paths(built.model, [s.path for s in samples], built.image_size, tta=settings.tta)}


@dataclass
class EpochData:
    """Training data whose epoch k is the same batches wherever the run started (efr.data.pipelines.make_dataset)."""

    paths: list
    labels: list
    num_classes: int
    image_size: int
    batch_size: int
    seed: int = 0
    augment: str = None
    cache: object = "auto"
    shard: tuple = None  # (process, processes): --distribute multi-worker (make_dataset)

    @property
    def steps_per_epoch(self):
        return efr_data.steps_per_epoch(len(self.paths), self.batch_size, self.shard is not None)

    def __call__(self, start_epoch):
        """The data of one fit, from its epoch ``start_epoch`` (0 unless the fit is resumed) on."""
        return efr_data.make_dataset(self.paths, self.labels, self.num_classes, self.image_size, self.batch_size,
                                     shuffle=True, seed=self.seed, augment=self.augment, cache=self.cache,
                                     start_epoch=start_epoch, shard=self.shard)


# ----------------------------------------------------------------------------------
# One unit: fit on one split and score another (a run calls it once, CV once a fold)


@dataclass
class UnitResult:
    fit: dict
    test_paths: list
    y_true: np.ndarray
    probs: np.ndarray
    predicted: dict  # predict_samples' answer: "probs", and "probs_plain" for fusion --subject-norm


def fit_and_score(built, settings, strategy, parts, class_names, meta, out_dir, *, seed, save_files=True, prefix="",
                  where="Test"):
    """Fit ``built`` on parts["train"], stop early on parts["valid"], predict parts["test"].

    Resumable: a checkpoint left in ``out_dir`` by an interrupted call is continued
    (efr.io.runstate, ``fit_model``).  ``seed`` seeds the training shuffle.  A fusion
    model's head trains in seconds on cached features and simply runs again.
    """
    if isinstance(built, FusionBuilt):
        fit = fit_fusion_split(built, parts["train"], parts["valid"], class_names, settings, meta, out_dir=out_dir,
                               save_files=save_files)
    else:
        size = built.image_size
        labels = {part: efr_data.labels_of(parts[part], class_names) for part in ("train", "valid")}
        train_data = EpochData(
            [s.path for s in parts["train"]], labels["train"], len(class_names), size, settings.batch_size,
            seed=seed, augment="online" if settings.augment == "online" else None, cache=settings.cache,
            shard=getattr(strategy, "data_shard", None),
        )
        valid_data = efr_data.make_dataset([s.path for s in parts["valid"]], labels["valid"], len(class_names),
                                           size, settings.batch_size, cache=settings.cache)
        with named_decode_errors([s.path for s in parts["train"] + parts["valid"]]):
            fit = fit_model(built, train_data, valid_data, settings, meta, strategy, out_dir=out_dir,
                            save_files=save_files, prefix=prefix, resumable=True)
        if hasattr(strategy, "localize"):  # multi-worker: each process predicts alone, on a copy of its own
            strategy.localize(built)
    predicted = predict_samples(built, parts["test"], settings, where=where)
    y_true = np.asarray(efr_data.labels_of(parts["test"], class_names), dtype=int)
    return UnitResult(fit, [s.path for s in parts["test"]], y_true, predicted["probs"], predicted)
