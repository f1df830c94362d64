"""``efr backbone``: train EFR's expression network (efrnet) on FER2013, select on PublicTest, ship it.

The recipe, chosen by measurement on PublicTest (docs/model-card.md): AdamW with a one-epoch
linear warm-up and cosine decay to zero, label smoothing 0.1, and on-the-fly augmentation in
tf.data (horizontal flip, rotations up to 10 degrees, shifts and zooms up to 10 %, contrast and
brightness jitter, random erasing of one rectangle in a quarter of the faces).

Every epoch ends with the network, its optimizer state and the epoch counter saved
(``last.keras``, atomically), a row appended to ``history.csv`` (PublicTest loss and accuracy,
seconds, images per second), and ``best.keras`` replaced when PublicTest accuracy improved: a run
killed at any point continues from its last finished epoch when the same command is run again
(``settings.json`` must match: a run is continued only with the settings that started it).  When
every epoch is done, ``finish`` measures the best network on PublicTest (with and without flip
test-time augmentation; accuracy with its Wilson interval, per-class recall, confusion matrix)
and writes ``efrnet.keras``: the network wrapped in EFR's model contract, with its provenance,
the file ``efr/models/weights/efrnet.keras`` is a copy of.
"""

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from efr.data.fer2013 import FER2013_EMOTIONS, NOTE, SIDE, load_split
from efr.io.errors import EFRError
from efr.models.efrnet import DEFAULT_WIDTHS, efrnet_core, wrap_rgb

LAST, BEST, HISTORY, SETTINGS = "last.keras", "best.keras", "history.csv", "settings.json"
SHIPPED_NAME, METRICS, CARD = "efrnet.keras", "metrics.json", "model-card.md"
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
    widths: tuple = DEFAULT_WIDTHS
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


def random_erasing(images, probability):
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
            x = random_erasing(x, recipe.erasing)
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
    from efr.io.imageio import atomic_path

    with atomic_path(path, keep_suffix=True) as tmp:
        model.save(tmp)


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


class _Progress:
    """A tqdm bar over one epoch's steps, as a Keras callback (None: no bar)."""

    def __new__(cls, steps, epoch, epochs, enabled):
        import keras
        from tqdm import tqdm

        class Bar(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)

            def on_train_batch_end(self, batch, logs=None):
                self.bar.update(1)
                if logs and "accuracy" in logs:
                    self.bar.set_postfix(acc=f"{float(logs['accuracy']):.3f}", refresh=False)

            def on_train_end(self, logs=None):
                self.bar.close()

        return Bar() if enabled else None


def check_settings(out, recipe, data):
    """Refuse to continue a run in ``out`` made with other settings; record these ones otherwise."""
    path = Path(out) / SETTINGS
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8")).get("recipe")
        except (OSError, ValueError) as err:
            raise EFRError(f"{path}: unreadable ({err}); give another --out") from err
        if saved != recipe.to_json():
            changed = sorted(k for k in recipe.to_json() if (saved or {}).get(k) != recipe.to_json()[k])
            raise EFRError(f"{out} holds a backbone run made with other settings ({', '.join(changed)} differ): "
                           f"give another --out, or the settings in {path}")
    from efr.io.runinfo import library_versions, write_json

    write_json(path, {"recipe": recipe.to_json(), "data": str(Path(data).resolve()), "note": NOTE,
                      "versions": library_versions()})


def train_backbone(data, out, recipe, log=None, progress=False):
    """Train efrnet on FER2013 ``data`` into the folder ``out``, continuing a run there; returns history rows.

    ``log``: a function of one line of text (the command's printer), None for silence;
    ``progress``: a tqdm bar over each epoch's steps.
    """
    import keras
    import tensorflow as tf

    log = log or (lambda line: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, recipe, data)
    rows = _read_history(out / HISTORY)
    if len(rows) >= recipe.epochs and (out / BEST).is_file():
        log(f"{out}: all {recipe.epochs} epochs done")
        return rows
    keras.utils.set_random_seed(recipe.seed)
    train_x, train_y, _ = load_split(data, "Training")
    val_x, val_y, _ = load_split(data, "PublicTest")
    num_classes = len(FER2013_EMOTIONS)
    steps = len(train_x) // recipe.batch_size
    if steps < 1:
        raise EFRError(f"{data}: {len(train_x)} Training faces, fewer than one batch of {recipe.batch_size}")
    log(f"FER2013 Training {len(train_x)} faces, PublicTest {len(val_x)}; {steps} steps an epoch")

    if (out / LAST).is_file() and rows:
        model = keras.models.load_model(out / LAST)
        log(f"continuing {out} after epoch {rows[-1]['epoch']} of {recipe.epochs}")
    else:
        rows = []
        model = efrnet_core(recipe.widths, recipe.dense, recipe.dropout, num_classes)
        _compile(model, recipe, steps)
    best = max((float(r["val_accuracy"]) for r in rows), default=-1.0)
    train_data = training_dataset(train_x, train_y, recipe, num_classes)
    val_data = eval_dataset(val_x, val_y, 256, num_classes)
    for epoch in range(len(rows) + 1, recipe.epochs + 1):
        tf.random.set_seed(recipe.seed * 1000 + epoch)
        bar = _Progress(steps, epoch, recipe.epochs, progress)
        began = time.perf_counter()
        fit = model.fit(train_data, epochs=epoch, initial_epoch=epoch - 1, verbose=0,
                        callbacks=[bar] if bar is not None else [])
        seconds = time.perf_counter() - began
        val_loss, val_acc = model.evaluate(val_data, verbose=0)
        row = {"epoch": epoch, "lr": f"{float(model.optimizer.learning_rate):.6g}",
               "loss": f"{fit.history['loss'][-1]:.5f}", "accuracy": f"{fit.history['accuracy'][-1]:.5f}",
               "val_loss": f"{val_loss:.5f}", "val_accuracy": f"{val_acc:.5f}", "seconds": f"{seconds:.1f}",
               "images_per_second": f"{steps * recipe.batch_size / seconds:.1f}"}
        _atomic_save(model, out / LAST)
        if val_acc > best:
            best = val_acc
            _atomic_save(model, out / BEST)
        rows.append(row)
        _write_history(out / HISTORY, rows)
        log(f"epoch {epoch}/{recipe.epochs}: loss {row['loss']} accuracy {row['accuracy']} "
            f"PublicTest {val_acc:.4f} (best {best:.4f}), {seconds:.0f} s")
    return rows


def evaluate_core(core, images, labels):
    """PublicTest-style evidence of a grey efrnet: accuracy (+ Wilson interval), flip-TTA accuracy, per class."""
    from efr.evaluate.metrics import compute_metrics
    from efr.evaluate.stats import wilson_interval

    plain = predict_probabilities(core, images)
    flipped = predict_probabilities(core, images, flip=True)
    metrics = compute_metrics(labels, plain, list(FER2013_EMOTIONS))
    correct = int((plain.argmax(1) == labels).sum())
    metrics["interval_95"] = list(wilson_interval(correct, len(labels)))
    tta_correct = int((flipped.argmax(1) == labels).sum())
    metrics["flip_tta"] = {"accuracy": tta_correct / len(labels),
                           "interval_95": list(wilson_interval(tta_correct, len(labels)))}
    metrics["images"] = int(len(labels))
    return metrics


def finish(data, out, recipe, log=None, command=None):
    """Measure ``out``/best.keras on PublicTest; write efrnet.keras (EFR model), metrics.json, model-card.md.

    ``command``: the command line that trained the run, for the model card (default: this process's).
    Returns the metrics.
    """
    import keras

    from efr.evaluate.metrics import plot_confusion_matrix, plot_history, read_history
    from efr.models.modelio import save_model
    from efr.io.runinfo import library_versions, machine_info, write_json
    from efr.models.transfer import sha256_of

    log = log or (lambda line: None)
    out = Path(out)
    rows = _read_history(out / HISTORY)
    core = keras.models.load_model(out / BEST, compile=False)
    images, labels, _ = load_split(data, "PublicTest")
    metrics = evaluate_core(core, images, labels)
    best_row = max(rows, key=lambda r: float(r["val_accuracy"]))
    training = {"epochs": len(rows), "best_epoch": int(best_row["epoch"]),
                "seconds": round(sum(float(r["seconds"]) for r in rows), 1),
                "images_per_second_median": float(np.median([float(r["images_per_second"]) for r in rows])),
                "machine": machine_info(), "versions": library_versions()}
    metrics.update({"split": "PublicTest", "note": NOTE, "training": training, "recipe": recipe.to_json(),
                    "source": str(Path(data).resolve()), "history": rows})
    meta = {"class_names": list(FER2013_EMOTIONS), "image_size": [SIDE, SIDE], "model": "efrnet",
            "preprocessing": "RGB [0,255] -> grey (fixed 1x1 conv, BT.601 luma) -> Rescaling(1/127.5, offset=-1)",
            "weights": {"source": "efr backbone", "best_keras_sha256": sha256_of(out / BEST)},
            "dataset": {"name": "FER2013", "train_split": "Training", "selected_on": "PublicTest", "note": NOTE},
            "publictest": {k: metrics[k] for k in ("accuracy", "interval_95", "flip_tta", "images",
                                                   "per_class_recall")},
            "training": {k: training[k] for k in ("epochs", "best_epoch", "seconds")}, "recipe": recipe.to_json()}
    save_model(wrap_rgb(core), out / SHIPPED_NAME, meta)
    metrics["efrnet_keras_sha256"] = sha256_of(out / SHIPPED_NAME)
    write_json(out / METRICS, metrics)
    from efr.io.imageio import write_text_atomic
    from efr.io.runinfo import command_line

    write_text_atomic(out / CARD, model_card(metrics, command or command_line()))
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), list(FER2013_EMOTIONS),
                          out / "confusion_matrix.png", normalize=True,
                          title="efrnet on FER2013 PublicTest (row-normalised)")
    history = [{**{k: float(v) for k, v in r.items()}, "epoch": int(r["epoch"]) - 1} for r in rows]
    plot_history(history, out / "curves.png", title="efrnet on FER2013 (valid = PublicTest)")
    log(f"PublicTest accuracy {metrics['accuracy']:.4f} (95 % CI {metrics['interval_95'][0]:.3f}-"
        f"{metrics['interval_95'][1]:.3f}), with flip TTA {metrics['flip_tta']['accuracy']:.4f}; "
        f"{len(labels)} faces; wrote {out / SHIPPED_NAME}")
    return metrics


def model_card(metrics, command):
    """docs/model-card.md for the efrnet that ``metrics`` (finish's) describes, as Markdown text."""
    names = list(FER2013_EMOTIONS)
    recipe, training = metrics["recipe"], metrics["training"]
    low, high = metrics["interval_95"]
    tta = metrics["flip_tta"]
    machine = training["machine"]
    lines = [
        "# Model card: efrnet, EFR's own expression network",
        "",
        "Written by `efr backbone` (efr/train/backbone.py, `model_card`) from the run's own files; the figures below "
        "are the shipped file's (a test checks them against its metadata).",
        "",
        "| | |", "|---|---|",
        "| file | `efr/models/weights/efrnet.keras` (built-in name `efrnet`) |",
        f"| sha256 | `{metrics['efrnet_keras_sha256']}` |",
        "| task | facial expression, 7 classes: " + ", ".join(names) + " (no Contemptuous) |",
        "| input | RGB [0, 255] 48x48 (any size in `efr train --model efrnet`), made grey inside (BT.601) |",
        f"| network | VGG-style: 4 stages of 2 x (3x3 conv, BatchNorm, ReLU) with {recipe['widths']} channels, 2x2 "
        f"max pooling, flatten (the features transfer and fusion use), dropout {recipe['dropout']}, "
        f"dense {recipe['dense']}, softmax |",
        "| data | FER2013 (Goodfellow et al. 2013) `Training` (train) and `PublicTest` (epoch selection); "
        "PrivateTest never read |",
        f"| command | `{command}` |",
        f"| PublicTest accuracy | **{metrics['accuracy']:.4f}** (95 % Wilson interval {low:.3f}-{high:.3f}), "
        f"{metrics['images']:,} faces |",
        f"| with flip test-time augmentation | {tta['accuracy']:.4f} ({tta['interval_95'][0]:.3f}-"
        f"{tta['interval_95'][1]:.3f}) |",
        f"| macro-F1 | {metrics['macro_f1']:.4f} |",
        f"| training | {training['epochs']} epochs, best at epoch {training['best_epoch']}, "
        f"{training['seconds'] / 3600:.2f} h on {machine.get('cpus')} CPU cores ({machine.get('platform')}), "
        f"median {training['images_per_second_median']:.0f} images/s |",
        "",
        "PublicTest chose the epoch, so its accuracy is slightly optimistic. " + NOTE + ".",
        "",
        "## Recipe",
        "",
        f"AdamW (peak learning rate {recipe['lr']}, weight decay {recipe['weight_decay']}), "
        f"{recipe['warmup_epochs']} epoch of linear warm-up then cosine decay to 0 over {recipe['epochs']} epochs, "
        f"batch {recipe['batch_size']}, label smoothing {recipe['label_smoothing']}; augmentation in tf.data: "
        f"horizontal flip, rotation up to {recipe['rotation']} degrees, shifts and zooms up to "
        f"{recipe['shift']:.0%} / {recipe['zoom']:.0%}, contrast 0.2 and brightness 0.15 jitter, one random "
        f"rectangle erased in {recipe['erasing']:.0%} of the faces; seed {recipe['seed']}.",
        "",
        "## Per class (PublicTest)",
        "",
        "| class | recall | precision | faces |", "|---|---:|---:|---:|",
    ]
    for name in names:
        lines.append(f"| {name} | {metrics['per_class_recall'][name]:.3f} | {metrics['per_class_precision'][name]:.3f} "
                     f"| {metrics['support'][name]} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted, counts):", "",
              "| | " + " | ".join(n[:4] for n in names) + " |", "|---|" + "---:|" * len(names)]
    for name, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Accuracy against training time", "", "| epoch | hours | PublicTest accuracy |", "|---:|---:|---:|"]
    elapsed = 0.0
    for row in metrics["history"]:
        elapsed += float(row["seconds"])
        lines.append(f"| {row['epoch']} | {elapsed / 3600:.2f} | {float(row['val_accuracy']):.4f} |")
    lines += [
        "",
        "## Limits",
        "",
        "- 48x48 grey faces: colour and fine detail are not used.",
        "- Seven classes: FER2013 has no contempt; on sets with Contemptuous, `efr evaluate` scores the shared "
        "classes and `efr train --model efrnet` learns an eight-class head.",
        "- FER2013 is web photos, mostly of adults, with the demographic skew of 2013 image search and about 10 % "
        "label noise; posed laboratory sets (RaFD, KDEF, JAFFE) look different, so measure on your own people "
        "(`efr evaluate`, `efr train --folds K`).",
        "- Research use: FER2013's licence terms are its authors'; the weights are EFR's (MIT).",
        "",
    ]
    return "\n".join(lines)
