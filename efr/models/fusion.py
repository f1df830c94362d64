"""``--model fusion``: frozen features (efr.models.features) with a trained softmax head.

Training extracts the fused vector of every face once (cached beside the dataset),
optionally centres it per person (``--subject-norm``), standardises it, and fits a
multinomial logistic regression, the softmax head: scikit-learn's L-BFGS solver, its L2
strength chosen among ``C_GRID`` by the Valid split's log-loss, then fitted again with that
strength on Train and Valid together (Test is never looked at).  It takes seconds on a CPU.

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

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from efr.faces.landmarks import NUM_POINTS
from efr.io.errors import EFRError
from efr.models import features as feats
from efr.models.features import FeatureCache
from efr.models.fusion_head import build_keras_model, fill_missing, fit_head, head_predict

FUSION = "fusion"

LANDMARK_SIZE = 192  # faces are given to the face mesh at (at least) its own input side

CACHE_FOLDER = "features_cache"  # inside the dataset folder

DEFAULT_BACKBONE = "efrnet"  # EFR's own FER2013 network (efr.models.efrnet), shipped with EFR
BACKBONES = ("efrnet", "fer2013", "mobilenetv3small", "efficientnetb0", "resnet50")


@dataclass
class FusionSpec:
    """What the fused vector is made of (stored in the model's efr.json under "fusion")."""

    backbone: str = DEFAULT_BACKBONE
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
    if backbone == "efrnet":
        from efr.models import efrnet

        size = int(image_size or efrnet.SIDE)
        model, info = efrnet.feature_model(weights, size)
        return model, size, info
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


def build_fusion(num_classes, image_size=None, weights=None, backbone=DEFAULT_BACKBONE, parts=feats.PARTS,
                 subject_norm=False):
    """A FusionBuilt ready for ``fit_fusion``; loads the trunk's weights now (errors before any run folder)."""
    if int(num_classes) < 2:
        raise EFRError(f"a classifier needs at least 2 classes; the dataset has {num_classes}")
    parts = check_parts(parts)
    backbone = str(backbone or DEFAULT_BACKBONE).strip().lower()
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
    model = trunk_model if trunk_model is not None else _hand_only_model(spec)
    return FusionBuilt(model, size, spec, trunk_model, dict(info), meta)


def _hand_only_model(spec):
    """What stands for the model until the head is fitted when the fused vector has no trunk part."""
    import keras
    from keras import layers

    hand = keras.Input((sum(spec.hand_dims.values()),), name="hand")
    return keras.Model(hand, layers.Identity(name="fused")(hand), name="fusion_hand_features")


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


def fusion_meta(built):
    return {**built.spec.as_meta(), "fill": [float(v) for v in built.head.fill], "C": built.head.C,
            "transductive": built.spec.subject_norm}
