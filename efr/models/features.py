"""Hand-made and pretrained face features, fused into one vector; per-person centring.

Three parts, each from the face crop alone:

- ``trunk``: the frozen FER2013 mini-Xception (efr.models.transfer) on the 64x64 grey face:
  the global average of its last residual block (128 values) and of its 7 class maps
  (FER2013's own expression scores before the softmax);
- ``hog``: OpenCV's HOG of the grey 64x64 face (1764 values: 16x16 blocks of 8x8
  cells, 9 orientations): where the edges of brows, eyes and mouth lie;
- ``landmarks``: the 468 face-mesh points (efr.faces.landmarks) turned so that the eyes are
  level, centred on the eyes' midpoint and divided by the eye distance (936 values):
  the face's shape, free of where it sits in the crop, its size and its tilt.

``subject_centre`` subtracts from every vector the mean vector of the same person.
What separates faces most is who they are, not what they show; with several photos of
each person (RaFD, KDEF, JAFFE: one per expression) the mean is that person's face and
what is left is their expression.  It is transductive: a person's test photos are
centred with their own mean, so it needs several photos of each person at test time,
and a person photographed with one expression only would lose it.
"""

import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from efr.io.errors import EFRError
from efr.faces.landmarks import NUM_POINTS, eye_angle, eye_centres

log = logging.getLogger(__name__)

HOG_SIZE = 64
TRUNK_SIZE = 64  # the FER2013 network's own input side
PARTS = ("trunk", "hog", "landmarks")
MIN_GROUP = 3  # smallest number of photos of one person that --subject-norm centres
# What a refusal of too small groups advises besides adding or leaving out photos (train's wording;
# evaluate and predict, which cannot drop the option, pass their own).
DEFAULT_ADVICE = "or drop --subject-norm"


def hog_descriptor(size=HOG_SIZE):
    return cv2.HOGDescriptor((size, size), (16, 16), (8, 8), (8, 8), 9)


def grey_square(image, size):
    """A BGR or grey image as a grey size x size uint8 array."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if grey.shape[:2] != (size, size):
        interpolation = cv2.INTER_AREA if grey.shape[0] > size else cv2.INTER_LINEAR
        grey = cv2.resize(grey, (size, size), interpolation=interpolation)
    return grey


def hog_features(images, size=HOG_SIZE):
    """HOG descriptors (n, 1764) float32 of BGR (or grey) face images."""
    hog = hog_descriptor(size)
    out = np.empty((len(images), hog.getDescriptorSize()), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = hog.compute(grey_square(image, size)).reshape(-1)
    return out


def normalise_landmarks(points):
    """(468, 2+) points -> (936,) float32: eyes level, eye midpoint at 0, eye distance 1."""
    points = np.asarray(points, dtype=np.float64)
    right, left = eye_centres(points)
    distance = float(np.hypot(*(left - right)))
    theta = -np.radians(eye_angle(points))
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    xy = (points[:, :2] - (right + left) / 2.0) @ rotation.T / max(distance, 1e-6)
    return xy.reshape(-1).astype(np.float32)


def landmark_features(points_list):
    """(n, 936) float32 from a list of (468, 3) arrays or None; rows without landmarks are NaN."""
    out = np.full((len(points_list), NUM_POINTS * 2), np.nan, dtype=np.float32)
    for i, points in enumerate(points_list):
        if points is not None:
            out[i] = normalise_landmarks(points)
    return out


def crop_landmarks(mesh, face):
    """Landmarks of a face crop (the whole image is the face, as crop.py cuts it)."""
    from efr.faces.landmarks import ROI_SCALE

    side = face.shape[0] / ROI_SCALE  # the mesh grows the box by ROI_SCALE: then it sees the whole crop
    offset = (face.shape[0] - side) / 2.0
    return mesh.points(face, (offset, offset, side, side))


# ---------------------------------------------------------------------------------------
# The trunk: a Keras model RGB [0, 255] -> 135 features


def fer2013_source(weights=None, image_size=TRUNK_SIZE, seed=None):
    """The FER2013 mini-Xception (input image_size, grey) and its weights record, as efr.models.transfer resolves them."""
    from efr.models import transfer

    if transfer._is_none_weights(weights):
        source = transfer.mini_xception((image_size, image_size, 1), len(transfer.FER2013_CLASSES), seed=seed)
        return source, {"source": None, "sha256": None, "note": "random initialisation (--weights none)"}
    path, info = transfer.fer2013_weights_file(weights)
    source = transfer.load_fer2013_source(path)
    if tuple(source.input_shape[1:3]) != (image_size, image_size):
        source = transfer.resize_input(source, image_size)
    return source, info


def trunk_feature_model(weights=None, image_size=TRUNK_SIZE, seed=None):
    """(Keras model RGB [0,255] -> trunk features, weights record).

    The features are the global averages of the FER2013 network's last residual block
    and of its class convolution's maps (its 7 expression scores before the softmax).
    """
    import keras
    from keras import layers

    from efr.models import transfer

    source, info = fer2013_source(weights, image_size, seed)
    trunk = transfer.cut_trunk(source)
    pool = [layer for layer in source.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)][-1]
    class_conv = pool.input._keras_history.operation
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = transfer.grey_layer()(inputs)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(x)
    block = trunk(x)
    scores = class_conv(block)
    out = layers.Concatenate(name="trunk_features")([
        layers.GlobalAveragePooling2D(name="trunk_pool")(block),
        layers.GlobalAveragePooling2D(name="fer2013_scores")(scores),
    ])
    model = keras.Model(inputs, out, name="fer2013_features")
    model.trainable = False
    return model, info


# ---------------------------------------------------------------------------------------
# Per-person centring


def subject_groups(subjects):
    """{subject: row indices}; an empty or missing subject is an error (centring needs who is who)."""
    groups = {}
    for i, subject in enumerate(subjects):
        if not subject:
            raise EFRError(
                "--subject-norm needs the subject of every photo, and some have none: use a Dataset made by "
                "crop.py (its manifest knows who is who), RaFD file names, or --subject-regex"
            )
        groups.setdefault(str(subject), []).append(i)
    return groups


def check_groups(groups, min_group=MIN_GROUP, where="the data", advice=DEFAULT_ADVICE):
    small = {s: len(rows) for s, rows in groups.items() if len(rows) < min_group}
    if small:
        listed = ", ".join(f"{s} ({n})" for s, n in sorted(small.items())[:8])
        raise EFRError(
            f"--subject-norm centres each person's photos on their own mean, which needs at least {min_group} "
            f"photos of each person; in {where} {len(small)} have fewer: {listed}. Add photos of them, leave "
            f"them out, {advice}"
        )


def subject_means(features, subjects, min_group=MIN_GROUP, where="the data", advice=DEFAULT_ADVICE):
    """(n, d) array: each row's person's mean feature vector (``advice``: see check_groups)."""
    groups = subject_groups(subjects)
    check_groups(groups, min_group, where, advice)
    means = np.empty_like(features)
    for rows in groups.values():
        means[rows] = features[rows].mean(axis=0)
    return means


def subject_centre(features, subjects, min_group=MIN_GROUP, where="the data"):
    """Each feature vector minus the mean vector of the same person."""
    return features - subject_means(features, subjects, min_group, where)


# ---------------------------------------------------------------------------------------
# A small cache: features are computed once per file and setting


def cache_key(config):
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def file_stamp(path):
    stat = Path(path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class FeatureCache:
    """{file path + size + mtime: feature row} kept in one .npz per feature setting."""

    def __init__(self, folder, config):
        self.path = Path(folder) / f"features-{cache_key(config)}.npz" if folder else None
        self.rows = {}
        if self.path is not None and self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    self.rows = dict(zip(data["keys"].tolist(), data["rows"]))
            except (OSError, ValueError, KeyError):
                log.warning("%s: unreadable feature cache, recomputing", self.path)

    def key(self, path):
        return f"{Path(path).resolve()}|{file_stamp(path)}"

    def get(self, path):
        return self.rows.get(self.key(path))

    def put(self, path, row):
        self.rows[self.key(path)] = np.asarray(row, dtype=np.float32)

    def save(self):
        if self.path is None or not self.rows:
            return
        from efr.io.imageio import atomic_path

        keys = sorted(self.rows)
        with atomic_path(self.path, keep_suffix=True) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, keys=np.asarray(keys, dtype=str), rows=np.stack([self.rows[k] for k in keys]))
