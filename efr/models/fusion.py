"""``--model fusion``: frozen features (efr.models.features) with a trained softmax head.

Training extracts the fused vector of every face once (cached beside the dataset),
standardises it with the Train statistics, optionally centres it per person
(``--subject-norm``), and fits a multinomial logistic regression, the softmax head:
scikit-learn's L-BFGS solver, its L2 strength chosen among ``C_GRID`` by the Valid
split's log-loss (Test is never looked at).  It takes seconds on a CPU.

The result is saved as one ordinary EFR ``.keras`` file: a Keras model with inputs

- ``image``: the face, RGB [0, 255] at 64x64 (what the trunk sees),
- ``hand``: the HOG and landmark features of the same face (computed with OpenCV and
  the face mesh by ``FusionExtractor``: they are not Keras operations),
- ``offset``: the vector subtracted before the head (zeros, or the person's mean
  features with ``--subject-norm``),

and one output, the class probabilities; its sub-models ``fusion_features`` (image,
hand -> fused vector) and ``fusion_head`` (centred vector -> probabilities) are what
per-person centring needs.  ``efr.json`` records the parts, the sizes and whether the
head expects centred features.  predict.py, cluster.py and efe_cnn.py's evaluation
use ``FusionRunner`` to feed it.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from efr.models import features as feats
from efr.models.features import FeatureCache
from efr.io.errors import EFRError
from efr.faces.landmarks import NUM_POINTS

log = logging.getLogger(__name__)

FUSION = "fusion"
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)  # L2 strengths tried; the Valid split picks one
LANDMARK_SIZE = 192  # faces are given to the face mesh at (at least) its own input side
CACHE_FOLDER = "features_cache"  # inside the dataset folder
BACKBONES = ("fer2013", "mobilenetv3small", "efficientnetb0", "resnet50")


@dataclass
class FusionSpec:
    """What the fused vector is made of (stored in the model's efr.json under "fusion")."""

    backbone: str = "fer2013"
    image_size: int = feats.TRUNK_SIZE
    parts: tuple = feats.PARTS
    subject_norm: bool = False
    trunk_dim: int = 0
    hand_dims: dict = field(default_factory=dict)  # part -> width, in the order of the hand input

    def as_meta(self):
        return {"backbone": self.backbone, "image_size": self.image_size, "parts": list(self.parts),
                "subject_norm": self.subject_norm, "trunk_dim": self.trunk_dim, "hand_dims": dict(self.hand_dims)}

    @classmethod
    def from_meta(cls, meta):
        try:
            return cls(backbone=meta["backbone"], image_size=int(meta["image_size"]), parts=tuple(meta["parts"]),
                       subject_norm=bool(meta["subject_norm"]), trunk_dim=int(meta["trunk_dim"]),
                       hand_dims=dict(meta["hand_dims"]))
        except (KeyError, TypeError, ValueError) as err:
            raise EFRError(f"fusion model metadata is incomplete ({err}); re-train it with efe_cnn.py") from err


def check_parts(parts):
    parts = tuple(p.strip() for p in parts if p.strip())
    bad = [p for p in parts if p not in feats.PARTS]
    if bad or not parts:
        raise EFRError(f"--fusion-parts {','.join(parts)}: choose one or more of {', '.join(feats.PARTS)}")
    return tuple(p for p in feats.PARTS if p in parts)


def backbone_feature_model(backbone, weights=None, image_size=None):
    """(Keras model RGB [0, 255] -> features, its input side, weights record) for a backbone name."""
    if backbone == "fer2013":
        size = int(image_size or feats.TRUNK_SIZE)
        model, info = feats.trunk_feature_model(weights, size)
        return model, size, info
    from efr.models import transfer

    if backbone not in transfer.TRANSFER_MODELS:
        raise EFRError(f"--backbone {backbone}: choose one of {', '.join(BACKBONES)}")
    built = transfer.build_application(backbone, 2, weights=weights, image_size=image_size)
    import keras

    # The built model is backbone + head; its penultimate tensor (the pooled backbone) is the feature.
    head = built.model.get_layer("head_dropout")
    model = keras.Model(built.model.inputs, head.input, name=f"{backbone}_features")
    model.trainable = False
    return model, built.image_size, dict(built.weights_info)


# ---------------------------------------------------------------------------------------
# Extracting the fused vector of face crops


def model_input(face_bgr, size):
    """A BGR face crop -> RGB float32 size x size, resized as for training."""
    if face_bgr.ndim == 2:
        face_bgr = cv2.cvtColor(face_bgr, cv2.COLOR_GRAY2BGR)
    if face_bgr.shape[:2] != (size, size):
        shrinking = face_bgr.shape[0] >= size
        face_bgr = cv2.resize(face_bgr, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return cv2.cvtColor(face_bgr, cv2.COLOR_BGR2RGB).astype(np.float32)


class FusionExtractor:
    """Computes the ``hand`` part (HOG, landmarks) of face crops; the trunk part runs in Keras."""

    def __init__(self, parts):
        self.parts = tuple(parts)
        self._mesh = None

    @property
    def mesh(self):
        if self._mesh is None:
            from efr.faces.landmarks import FaceMesh

            self._mesh = FaceMesh()
        return self._mesh

    def hand_dims(self):
        dims = {}
        if "hog" in self.parts:
            dims["hog"] = int(feats.hog_descriptor().getDescriptorSize())
        if "landmarks" in self.parts:
            dims["landmarks"] = NUM_POINTS * 2
        return dims

    def hand(self, faces_bgr, points=None):
        """(n, hand width) float32; landmark rows of faces without landmarks are NaN.

        ``points``: landmarks already known (crop.py's landmarks.npz), None entries are
        found with the face mesh.
        """
        blocks = []
        if "hog" in self.parts:
            blocks.append(feats.hog_features(faces_bgr))
        if "landmarks" in self.parts:
            points = list(points) if points is not None else [None] * len(faces_bgr)
            for i, face in enumerate(faces_bgr):
                if points[i] is None:
                    points[i] = feats.crop_landmarks(self.mesh, _at_least(face, LANDMARK_SIZE))
                    if points[i] is not None and face.shape[0] < LANDMARK_SIZE:
                        points[i] = points[i] * (face.shape[0] / float(max(face.shape[0], LANDMARK_SIZE)))
            blocks.append(feats.landmark_features(points))
        width = sum(self.hand_dims().values())
        return np.hstack(blocks).astype(np.float32) if blocks else np.zeros((len(faces_bgr), width), np.float32)


def _at_least(face, side):
    if face.shape[0] >= side:
        return face
    return cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)


# ---------------------------------------------------------------------------------------
# The head


@dataclass
class Head:
    mean: np.ndarray  # subtracted after the offset (Train mean; ~0 when centred per person)
    scale: np.ndarray  # divided by (Train standard deviation)
    fill: np.ndarray  # values for missing landmark features (Train means of the raw features)
    weights: np.ndarray  # (d, classes)
    bias: np.ndarray  # (classes,)
    C: float
    path: list  # [{C, train loss/accuracy, valid loss/accuracy}] in C_GRID order


def fill_missing(raw, fill):
    """Raw fused vectors with NaN (no landmarks) replaced by ``fill``."""
    raw = np.array(raw, dtype=np.float32, copy=True)
    missing = np.isnan(raw)
    if missing.any():
        raw[missing] = np.broadcast_to(fill, raw.shape)[missing]
    return raw


def _log_loss(probs, y):
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))


def fit_head(raw_train, y_train, raw_valid, y_valid, num_classes, offsets_train=None, offsets_valid=None, seed=0,
             c_grid=C_GRID, blocks=None, fill=None):
    """Fit the softmax head; C by Valid log-loss.  ``offsets_*``: per-person means to subtract (or None).

    ``blocks``: widths of the fused parts; each part is scaled by 1/sqrt(width) after
    standardising, so every part carries the same total variance (HOG's 1764 values
    would otherwise outweigh the trunk's 135 by their number alone).
    """
    from sklearn.linear_model import LogisticRegression

    if fill is None:
        fill = np.nanmean(raw_train, axis=0)
        fill = np.where(np.isfinite(fill), fill, 0.0).astype(np.float32)
    x_train = fill_missing(raw_train, fill) - (0 if offsets_train is None else offsets_train)
    x_valid = fill_missing(raw_valid, fill) - (0 if offsets_valid is None else offsets_valid)
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    if blocks:
        scale = scale * np.concatenate([np.full(int(b), np.sqrt(b)) for b in blocks])
    z_train, z_valid = (x_train - mean) / scale, (x_valid - mean) / scale
    from threadpoolctl import threadpool_limits

    best, path = None, []
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed)
        # One BLAS thread: these matrices are small, and two threads on a busy 2-core machine made
        # the fit ten times slower (measured: 0.9 s against 10.7 s for the six fits on JAFFE).
        with threadpool_limits(1):
            model.fit(z_train, y_train)
        weights, bias = _full_coefficients(model, num_classes)
        p_train, p_valid = _softmax(z_train @ weights + bias), _softmax(z_valid @ weights + bias)
        row = {"C": c, "loss": _log_loss(p_train, y_train), "accuracy": float((p_train.argmax(1) == y_train).mean()),
               "val_loss": _log_loss(p_valid, y_valid), "val_accuracy": float((p_valid.argmax(1) == y_valid).mean())}
        path.append(row)
        if best is None or row["val_loss"] < best[0]["val_loss"]:
            best = (row, weights, bias)
    row, weights, bias = best
    log.info("fusion head: C=%g chosen by Valid log-loss %.4f (accuracy %.3f)", row["C"], row["val_loss"],
             row["val_accuracy"])
    return Head(mean.astype(np.float32), scale.astype(np.float32), fill, weights.astype(np.float32),
                bias.astype(np.float32), float(row["C"]), path)


def _full_coefficients(model, num_classes):
    """(d, classes) weights and (classes,) bias, with zero columns for classes Train lacks."""
    d = model.coef_.shape[1]
    weights = np.zeros((d, num_classes), np.float64)
    bias = np.full(num_classes, -30.0)  # a class never seen in training gets (almost) no probability
    present = list(model.classes_)
    if len(present) == 2 and model.coef_.shape[0] == 1:  # scikit-learn's binary form: one row
        weights[:, present[1]], bias[present[1]] = model.coef_[0] / 2, model.intercept_[0] / 2
        weights[:, present[0]], bias[present[0]] = -model.coef_[0] / 2, -model.intercept_[0] / 2
    else:
        for row, cls in enumerate(present):
            weights[:, cls], bias[cls] = model.coef_[row], model.intercept_[row]
    return weights, bias


def _softmax(logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def build_keras_model(trunk_model, spec, head, num_classes):
    """The saved fusion model: [image, hand, offset] -> probabilities (see the module docstring)."""
    import keras
    from keras import layers

    size, hand_width = spec.image_size, sum(spec.hand_dims.values())
    image = keras.Input((size, size, 3), name="image")
    hand = keras.Input((hand_width,), name="hand")
    parts = []
    if "trunk" in spec.parts:
        parts.append(trunk_model(image))
    if hand_width:
        parts.append(hand)
    fused = layers.Concatenate(name="fused")(parts) if len(parts) > 1 else layers.Identity(name="fused")(parts[0])
    features = keras.Model([image, hand], fused, name="fusion_features")
    width = int(fused.shape[-1])
    centred = keras.Input((width,), name="centred")
    z = layers.Normalization(mean=head.mean, variance=np.square(head.scale), name="standardise")(centred)
    dense = layers.Dense(num_classes, activation="softmax", name="head_predictions")
    probs = dense(z)
    head_model = keras.Model(centred, probs, name="fusion_head")
    dense.set_weights([head.weights, head.bias])
    img_in = keras.Input((size, size, 3), name="image")
    hand_in = keras.Input((hand_width,), name="hand")
    offset = keras.Input((width,), name="offset")
    out = head_model(layers.Subtract(name="centre")([features([img_in, hand_in]), offset]))
    model = keras.Model([img_in, hand_in, offset], out, name="fusion")
    model.trainable = False
    return model


# ---------------------------------------------------------------------------------------
# Using a saved (or freshly built) fusion model


class FusionRunner:
    """Feeds face crops to a fusion model: probabilities, fused features, per-person centring."""

    def __init__(self, model, meta):
        self.model = model
        self.spec = FusionSpec.from_meta(meta.get("fusion") or {})
        self.fill = np.asarray(meta["fusion"].get("fill") or [], dtype=np.float32)
        self.extractor = FusionExtractor(self.spec.parts)
        self.features_model = model.get_layer("fusion_features")
        self.head_model = model.get_layer("fusion_head")

    def raw_features(self, faces_bgr, points=None, batch_size=64):
        """(n, d) fused vectors of BGR face crops (NaN-free: missing landmarks filled)."""
        if not len(faces_bgr):
            return np.zeros((0, self.features_model.output_shape[-1]), np.float32)
        hand = self.extractor.hand(faces_bgr, points)
        images = np.stack([model_input(f, self.spec.image_size) for f in faces_bgr])
        out = []
        for start in range(0, len(images), batch_size):
            sl = slice(start, start + batch_size)
            out.append(np.asarray(self.features_model.predict_on_batch([images[sl], hand[sl]]), np.float32))
        raw = np.concatenate(out)
        return fill_missing(raw, self.fill) if self.fill.size else np.nan_to_num(raw)

    def offsets(self, raw, groups=None, where="the data"):
        """What the head subtracts: zeros, or each face's person mean (``groups``: a subject per face)."""
        if not self.spec.subject_norm:
            return np.zeros_like(raw)
        if groups is None:
            raise EFRError(
                "this model was trained with --subject-norm: it needs the person of every face to centre their "
                "features (predict.py --subject-norm with RaFD names or --subject-regex)"
            )
        return feats.subject_means(raw, groups, where=where)

    def probabilities(self, raw, offsets=None, batch_size=256):
        offsets = np.zeros_like(raw) if offsets is None else offsets
        if not len(raw):
            return np.zeros((0, self.head_model.output_shape[-1]), np.float32)
        return np.asarray(self.head_model.predict(raw - offsets, batch_size=batch_size, verbose=0), np.float32)

    def predict(self, faces_bgr, groups=None, points=None, tta="none"):
        raw = self.raw_features(faces_bgr, points)
        probs = self.probabilities(raw, self.offsets(raw, groups))
        if tta == "flip":
            mirrored = self.raw_features([cv2.flip(f, 1) for f in faces_bgr])
            probs = (probs + self.probabilities(mirrored, self.offsets(mirrored, groups))) / 2.0
        return probs

    def embedding(self, faces_bgr, groups=None):
        """The standardised (and, for --subject-norm models, centred) vectors the head classifies."""
        raw = self.raw_features(faces_bgr)
        norm = self.head_model.get_layer("standardise")
        return np.asarray(norm(raw - self.offsets(raw, groups)), np.float32)


def is_fusion(meta):
    return str((meta or {}).get("model", "")).lower() == FUSION


def read_faces(paths):
    from efr.io.imageio import read_image

    return [read_image(p) for p in paths]


def dataset_points(dataset_dir, paths):
    """Landmarks crop.py saved for these files (None where it has none)."""
    from efr.faces.landmarks import read_landmarks_file

    stored = read_landmarks_file(dataset_dir)
    if not stored:
        return [None] * len(paths)
    root = Path(dataset_dir).resolve()
    out = []
    for p in paths:
        try:
            out.append(stored.get(Path(p).resolve().relative_to(root).as_posix()))
        except ValueError:
            out.append(None)
    return out


# ---------------------------------------------------------------------------------------
# Building and training (efr.train.run calls these for --model fusion)


@dataclass
class FusionBuilt:
    """What efr.train.run needs of a model: ``.model`` (the trunk until fitted, then the fusion model)."""

    model: object
    image_size: int
    spec: FusionSpec
    trunk_model: object
    weights_info: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    backbone: object = None  # one phase: the trunk stays frozen
    head: object = None
    plain_head: object = None  # --subject-norm: the same head without centring, for the side-by-side number


def build_fusion(num_classes, image_size=None, weights=None, backbone="fer2013", parts=feats.PARTS,
                 subject_norm=False):
    """A FusionBuilt ready for ``fit_fusion``; loads the trunk's weights now (errors before any run folder)."""
    if int(num_classes) < 2:
        raise EFRError(f"a classifier needs at least 2 classes; the dataset has {num_classes}")
    parts = check_parts(parts)
    backbone = str(backbone or "fer2013").strip().lower()
    if backbone not in BACKBONES:
        raise EFRError(f"--backbone {backbone}: choose one of {', '.join(BACKBONES)}")
    trunk_model, size, info = (None, int(image_size or feats.TRUNK_SIZE), {"source": None, "note": "no trunk"})
    if "trunk" in parts:
        trunk_model, size, info = backbone_feature_model(backbone, weights, image_size)
    extractor = FusionExtractor(parts)
    spec = FusionSpec(backbone=backbone, image_size=size, parts=parts, subject_norm=bool(subject_norm),
                      trunk_dim=int(trunk_model.output_shape[-1]) if trunk_model is not None else 0,
                      hand_dims=extractor.hand_dims())
    meta = {"model": FUSION, "image_size": [size, size], "weights": dict(info),
            "preprocessing": "trunk: as its backbone; hand: HOG of the grey 64x64 face and eye-normalised "
                             "face-mesh landmarks, computed outside the Keras graph (efr.models.fusion.FusionRunner)"}
    return FusionBuilt(trunk_model, size, spec, trunk_model, dict(info), meta)


def feature_config(built):
    return {"spec": {k: v for k, v in built.spec.as_meta().items() if k != "subject_norm"},
            "weights": built.weights_info.get("sha256") or built.weights_info.get("source"), "version": 1}


def raw_features(built, paths, dataset_dir=None, progress=False, batch_size=64, flip=False):
    """(n, d) fused vectors (NaN where landmarks are missing) of face files, through the cache.

    ``flip``: of the mirror images (their landmarks found anew by the mesh).
    """
    from tqdm import tqdm

    config = dict(feature_config(built), flip=True) if flip else feature_config(built)
    cache = FeatureCache(Path(dataset_dir) / CACHE_FOLDER if dataset_dir else None, config)
    rows = [cache.get(p) for p in paths]
    todo = [i for i, r in enumerate(rows) if r is None]
    if todo:
        extractor = FusionExtractor(built.spec.parts)
        points = (dataset_points(dataset_dir, [paths[i] for i in todo]) if dataset_dir and not flip
                  else [None] * len(todo))
        bar = tqdm(total=len(todo), desc="features", unit="face", disable=not progress, leave=False)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            faces_bgr = read_faces([paths[i] for i in chunk])
            if flip:
                faces_bgr = [cv2.flip(f, 1) for f in faces_bgr]
            blocks = []
            if built.trunk_model is not None:
                images = np.stack([model_input(f, built.spec.image_size) for f in faces_bgr])
                blocks.append(np.asarray(built.trunk_model.predict_on_batch(images), np.float32))
            blocks.append(extractor.hand(faces_bgr, points[start : start + len(chunk)]))
            for i, row in zip(chunk, np.hstack(blocks)):
                rows[i] = row
                cache.put(paths[i], row)
            bar.update(len(chunk))
        bar.close()
        cache.save()
    width = built.spec.trunk_dim + sum(built.spec.hand_dims.values())
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, width), np.float32)


def block_sizes(spec):
    sizes = [spec.trunk_dim] if spec.trunk_dim else []
    return sizes + [int(v) for v in spec.hand_dims.values()]


def fit_fusion(built, train, valid, class_names, dataset_dir, seed=0, progress=False):
    """Fit the head(s) on Train, choosing C on Valid; set ``built.model``; return (history rows, summary)."""
    raw_train = raw_features(built, [s.path for s in train], dataset_dir, progress)
    raw_valid = raw_features(built, [s.path for s in valid], dataset_dir, progress)
    y_train = np.asarray([class_names.index(s.emotion) for s in train])
    y_valid = np.asarray([class_names.index(s.emotion) for s in valid])
    fill = _fill_values(raw_train)
    x_train, x_valid = fill_missing(raw_train, fill), fill_missing(raw_valid, fill)
    blocks = block_sizes(built.spec)
    heads = {}
    for centred in ((False, True) if built.spec.subject_norm else (False,)):
        off_train = feats.subject_means(x_train, [s.subject for s in train], where="Train") if centred else None
        off_valid = feats.subject_means(x_valid, [s.subject for s in valid], where="Valid") if centred else None
        heads[centred] = fit_head(x_train, y_train, x_valid, y_valid, len(class_names), off_train, off_valid,
                                  seed=seed, blocks=blocks, fill=fill)
    built.head = heads[built.spec.subject_norm]
    built.plain_head = heads[False] if built.spec.subject_norm else None
    built.model = build_keras_model(built.trunk_model, built.spec, built.head, len(class_names))
    history = [dict(epoch=i, phase=f"C={row['C']:g}", **row) for i, row in enumerate(built.head.path)]
    best = int(np.argmin([row["val_loss"] for row in built.head.path]))
    summary = {"epochs_run": len(history), "best_epoch": best + 1, "best_val_loss": built.head.path[best]["val_loss"],
               "phases": ["head (L-BFGS, C chosen on Valid)"], "C": built.head.C}
    return history, summary


def _fill_values(raw_train):
    fill = np.nanmean(raw_train, axis=0) if len(raw_train) else np.zeros(raw_train.shape[1], np.float32)
    return np.where(np.isfinite(fill), fill, 0.0).astype(np.float32)


def predict_fusion(built, samples, dataset_dir=None, where="Test", tta="none"):
    """Probabilities of samples: {"probs": ..., "probs_plain": ... (only with --subject-norm)}.

    ``tta="flip"``: averaged with the probabilities of the mirrored faces (their own
    features, landmarks found on the mirror image, centred on the mirrored photos' mean).
    """
    views = [False, True] if tta == "flip" else [False]
    out = {}
    for flip in views:
        raw = fill_missing(raw_features(built, [s.path for s in samples], dataset_dir, flip=flip), built.head.fill)
        found = {}
        if built.spec.subject_norm:
            offsets = feats.subject_means(raw, [s.subject for s in samples], where=where)
            found["probs"] = head_predict(built.head, raw - offsets)
            found["probs_plain"] = head_predict(built.plain_head, raw)
        else:
            found["probs"] = head_predict(built.head, raw)
        for key, value in found.items():
            out[key] = out.get(key, 0) + value / len(views)
    return out


def head_predict(head, x):
    return _softmax(((x - head.mean) / head.scale) @ head.weights + head.bias).astype(np.float32)


def fusion_meta(built):
    return {**built.spec.as_meta(), "fill": [float(v) for v in built.head.fill], "C": built.head.C,
            "transductive": built.spec.subject_norm}
