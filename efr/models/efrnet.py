"""EFR's own expression backbone (``efrnet``): the network, and the recipe that trains it on FER2013.

The network is a VGG-style stack sized for what two CPU cores can train: four stages of two
3x3 Conv-BatchNorm-ReLU layers (widths 32, 64, 128, 256 by default), 2x2 max pooling after each,
then the 3x3 map flattened (expressions are where things are: the spatial layout is kept, not
averaged away), dropout, a 256-unit dense layer and a softmax over FER2013's seven classes.  It
reads 48x48 grey faces in [0, 255].  ``wrap_rgb`` puts the EFR model contract in front of it
(RGB [0, 255] at any training size -> resize to 48 -> BT.601 grey), so the shipped file
works wherever EFR takes a model.

The recipe (``train_backbone``) was chosen by measurement on PublicTest (docs/model-card.md):
AdamW with a linear warm-up and cosine decay, label smoothing, and on-the-fly augmentation in
tf.data (horizontal flip, small rotations, shifts and zooms, contrast and brightness jitter, random
erasing).  Every epoch ends with the model, its optimizer and the epoch counter saved
(``last.keras``, atomically), the PublicTest accuracy appended to ``history.csv``, and
``best.keras`` replaced when PublicTest improved: a run killed at any point continues with
``resume=True`` from its last finished epoch.
"""

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from efr.io.errors import EFRError
from efr.data.fer2013 import FER2013_EMOTIONS, NOTE, SIDE, load_split

LAST, BEST, HISTORY, SETTINGS = "last.keras", "best.keras", "history.csv", "settings.json"
HISTORY_FIELDS = ("epoch", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_second")


@dataclass
class Recipe:
    """Everything that makes a backbone run; saved as settings.json and checked again on resume."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    widths: tuple = (32, 64, 128, 256)
    dense: int = 256
    dropout: float = 0.3
    rotation: float = 10.0  # degrees, either way
    shift: float = 0.1  # share of the side
    zoom: float = 0.1
    erasing: float = 0.25  # probability of erasing one random rectangle
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self):
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data


def efrnet_core(recipe, num_classes=len(FER2013_EMOTIONS)):
    """The network on 48x48x1 grey faces in [0, 255] -> class probabilities."""
    import keras
    from keras import layers

    inputs = keras.Input((SIDE, SIDE, 1), name="grey_0_255")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    for stage, width in enumerate(recipe.widths, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"s{stage}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"s{stage}_bn{conv}")(x)
            x = layers.ReLU(name=f"s{stage}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"s{stage}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(recipe.dropout, name="drop1")(x)
    x = layers.Dense(recipe.dense, use_bias=False, name="features")(x)
    x = layers.BatchNormalization(name="features_bn")(x)
    x = layers.ReLU(name="features_relu")(x)
    x = layers.Dropout(recipe.dropout, name="drop2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="efrnet")


def augmenter(recipe):
    """Keras preprocessing layers applied to training batches in tf.data (grey [0, 255])."""
    import keras
    from keras import layers

    seed = recipe.seed
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(recipe.rotation / 360.0, fill_mode="reflect", seed=seed + 1),
            layers.RandomTranslation(recipe.shift, recipe.shift, fill_mode="reflect", seed=seed + 2),
            layers.RandomZoom(recipe.zoom, recipe.zoom, fill_mode="reflect", seed=seed + 3),
            layers.RandomContrast(0.2, value_range=(0, 255), seed=seed + 4),
            layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 5),
        ],
        name="augment",
    )


def random_erasing(images, probability, seed):
    """Erase (fill with noise) one random rectangle of 2-33 % of the area in each image with ``probability``."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    side = float(SIDE)
    area = tf.random.uniform([batch], 0.02, 0.33) * side * side
    ratio = tf.exp(tf.random.uniform([batch], np.log(0.3), np.log(3.3)))
    h = tf.clip_by_value(tf.sqrt(area * ratio), 1.0, side)
    w = tf.clip_by_value(tf.sqrt(area / ratio), 1.0, side)
    y0 = tf.random.uniform([batch]) * (side - h)
    x0 = tf.random.uniform([batch]) * (side - w)
    grid = tf.range(side)
    in_y = (grid[None, :] >= y0[:, None]) & (grid[None, :] < (y0 + h)[:, None])
    in_x = (grid[None, :] >= x0[:, None]) & (grid[None, :] < (x0 + w)[:, None])
    box = in_y[:, :, None] & in_x[:, None, :]
    chosen = tf.random.uniform([batch]) < probability
    mask = (box & chosen[:, None, None])[..., None]
    noise = tf.random.uniform(tf.shape(images), 0.0, 255.0)
    return tf.where(mask, noise, images)


def training_dataset(images, labels, recipe, num_classes):
    import tensorflow as tf

    aug = augmenter(recipe)
    smooth = recipe.label_smoothing

    def transform(x, y):
        x = tf.cast(x, tf.float32)[..., None]
        x = aug(x, training=True)
        if recipe.erasing > 0:
            x = random_erasing(x, recipe.erasing, recipe.seed)
        x = tf.clip_by_value(x, 0.0, 255.0)
        target = tf.one_hot(y, num_classes) * (1.0 - smooth) + smooth / num_classes
        return x, target

    data = tf.data.Dataset.from_tensor_slices((images, labels))
    data = data.shuffle(len(images), seed=recipe.seed, reshuffle_each_iteration=True)
    data = data.batch(recipe.batch_size, drop_remainder=True).map(transform, num_parallel_calls=2)
    options = tf.data.Options()
    options.autotune.enabled = False  # efr.data: the autotuner stalled epoch ends here
    return data.with_options(options).prefetch(2)


def eval_dataset(images, labels, batch_size, num_classes):
    import tensorflow as tf

    def transform(x, y):
        return tf.cast(x, tf.float32)[..., None], tf.one_hot(y, num_classes)

    options = tf.data.Options()
    options.autotune.enabled = False
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(256).map(transform)
    return data.with_options(options)


def predict_probabilities(model, images, flip=False, batch_size=256):
    """Softmax of ``model`` on grey uint8 faces (N, 48, 48); ``flip``: mean with the mirrored faces."""
    x = images.astype(np.float32)[..., None]
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    if flip:
        probs = (probs + model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2
    return probs


def _atomic_save(model, path):
    tmp = path.with_name(path.stem + ".partial.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _read_history(path):
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_history(path, rows):
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _compile(model, recipe, steps_per_epoch):
    import keras

    total = recipe.epochs * steps_per_epoch
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.lr / 10, decay_steps=max(1, total - warmup), alpha=0.0,
        warmup_target=recipe.lr, warmup_steps=warmup)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=recipe.weight_decay)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])


def train_backbone(data, out, recipe, resume=True, log=print):
    """Train efrnet on FER2013 ``data`` into the folder ``out``; returns the history rows.

    ``resume``: continue a run in ``out`` from its last finished epoch (the recipe must be the same).
    ``log``: a function of one line of text (the command passes its printer; None: silent).
    """
    import keras
    import tensorflow as tf

    log = log or (lambda line: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings_path = out / SETTINGS
    if settings_path.is_file():
        saved = json.loads(settings_path.read_text(encoding="utf-8"))
        if saved.get("recipe") != recipe.to_json():
            raise EFRError(f"{out} holds a backbone run with other settings; give another --out or the same settings")
    settings_path.write_text(json.dumps({"recipe": recipe.to_json(), "data": str(data), "note": NOTE}, indent=2) + "\n",
                             encoding="utf-8")

    keras.utils.set_random_seed(recipe.seed)
    train_x, train_y, _ = load_split(data, "Training")
    val_x, val_y, _ = load_split(data, "PublicTest")
    num_classes = len(FER2013_EMOTIONS)
    steps = len(train_x) // recipe.batch_size
    log(f"FER2013 Training {len(train_x)} faces, PublicTest {len(val_x)}; {steps} steps an epoch")

    history_path = out / HISTORY
    rows = _read_history(history_path) if resume else []
    if resume and (out / LAST).is_file() and rows:
        model = keras.models.load_model(out / LAST)
        start = int(rows[-1]["epoch"])
        log(f"resuming {out} after epoch {start}")
    else:
        rows = []
        model = efrnet_core(recipe, num_classes)
        _compile(model, recipe, steps)
        start = 0
    best = max((float(r["val_accuracy"]) for r in rows), default=-1.0)
    train_data = training_dataset(train_x, train_y, recipe, num_classes)
    val_data = eval_dataset(val_x, val_y, 256, num_classes)
    for epoch in range(start + 1, recipe.epochs + 1):
        tf.random.set_seed(recipe.seed * 1000 + epoch)
        began = time.perf_counter()
        fit = model.fit(train_data, epochs=epoch, initial_epoch=epoch - 1, verbose=0)
        seconds = time.perf_counter() - began
        val_loss, val_acc = model.evaluate(val_data, verbose=0)
        lr = float(model.optimizer.learning_rate)
        row = {"epoch": epoch, "lr": f"{lr:.6g}", "loss": f"{fit.history['loss'][-1]:.5f}",
               "accuracy": f"{fit.history['accuracy'][-1]:.5f}", "val_loss": f"{val_loss:.5f}",
               "val_accuracy": f"{val_acc:.5f}", "seconds": f"{seconds:.1f}",
               "images_per_second": f"{steps * recipe.batch_size / seconds:.1f}"}
        _atomic_save(model, out / LAST)
        if val_acc > best:
            best = val_acc
            _atomic_save(model, out / BEST)
        rows.append(row)
        _write_history(history_path, rows)
        log(f"epoch {epoch}/{recipe.epochs}: loss {row['loss']} acc {row['accuracy']} "
            f"PublicTest {val_acc:.4f} (best {best:.4f}) {seconds:.0f} s")
    return rows


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="train efrnet on FER2013")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=Recipe.epochs)
    parser.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    parser.add_argument("--lr", type=float, default=Recipe.lr)
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--widths", default="32,64,128,256")
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                    widths=tuple(int(w) for w in args.widths.split(",")))
    train_backbone(args.data, args.out, recipe, resume=not args.no_resume, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
