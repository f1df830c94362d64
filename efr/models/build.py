"""The seed CNN and ``build_model``, the one place a model is chosen by name.

The seed CNN is the original project's network, layer for layer: three Conv2D +
ReLU + AveragePooling2D blocks (32 "same", 64 and 128 "valid" 3x3 filters), Flatten,
Dense(64) ReLU and a softmax over the classes, trained with Adam on categorical
cross-entropy.  One thing is added in front, a Rescaling(1/255) layer, because every
EFR model takes RGB [0, 255] and scales inside (efr.models.modelio's contract): the original
scaled its NumPy arrays instead, which made float64 copies of the whole dataset.

Other names are transfer-learning models built by efr.models.transfer (imported only when
asked for, since it pulls in keras.applications).
"""

from dataclasses import dataclass, field

from efr.io.errors import EFRError
from efr.faces.detect import DEFAULT_IMAGE_SIZE

SEED_MODEL = "seed"
FUSION_MODEL = "fusion"  # efr.models.fusion: frozen trunk + HOG + landmarks, softmax head
MIN_SEED_IMAGE_SIZE = 24  # three 2x poolings and two valid 3x3 convolutions need this much


@dataclass
class BuiltModel:
    """A model ready to compile, and what the run records about it (same fields as efr.models.transfer's)."""

    model: object  # keras.Model: RGB [0, 255] (image_size, image_size, 3) -> class probabilities
    image_size: int
    backbone: object = None  # sub-model frozen in phase 1 and unfrozen in phase 2; None: one phase
    weights_info: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def seed_cnn(num_classes, image_size=DEFAULT_IMAGE_SIZE):
    """The original EFR network for ``num_classes`` classes at image_size x image_size RGB."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((image_size, image_size, 3), name="rgb_0_255"),
            layers.Rescaling(1.0 / 255, name="scale_to_0_1"),
            layers.Conv2D(32, (3, 3), padding="same", activation="relu"),
            layers.AveragePooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.AveragePooling2D((2, 2)),
            layers.Conv2D(128, (3, 3), activation="relu"),
            layers.AveragePooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="seed_cnn",
    )


def build_model(name, num_classes, image_size=None, weights=None, **fusion_options):
    """Build model ``name`` for ``num_classes`` classes; returns a BuiltModel-like object.

    ``"seed"``: the seed CNN at ``image_size`` (default 256), random initial weights.
    ``"fusion"``: efr.models.fusion's frozen features + softmax head (``fusion_options``:
    backbone, parts, subject_norm).  Any other name goes to
    ``efr.models.transfer.build_transfer_model`` (its ``.backbone`` is trained in two phases by
    efr.train.run).
    """
    if int(num_classes) < 2:
        raise EFRError(f"a classifier needs at least 2 classes; the dataset has {num_classes}")
    if str(name).strip().lower() == FUSION_MODEL:
        from efr.models.fusion import build_fusion

        return build_fusion(num_classes, image_size, weights, **fusion_options)
    if str(name).strip().lower() != SEED_MODEL:
        from efr.models import transfer

        return transfer.build_transfer_model(name, num_classes, weights=weights, image_size=image_size)
    if weights not in (None, "", "none"):
        raise EFRError(
            f"--weights {weights}: the seed CNN always starts from random weights; "
            "--weights is for transfer models (--model fer2013, mobilenetv3small, ...)"
        )
    size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if size < MIN_SEED_IMAGE_SIZE:
        raise EFRError(f"--img-size {size} is too small for the seed CNN: use {MIN_SEED_IMAGE_SIZE} or more")
    return BuiltModel(
        model=seed_cnn(int(num_classes), size),
        image_size=size,
        weights_info={"source": None, "note": "random initialisation"},
        meta={"model": SEED_MODEL, "image_size": [size, size]},
    )


def compile_model(model, learning_rate):
    """Adam on categorical cross-entropy with accuracy, as the original."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def model_names():
    """Every name ``build_model`` accepts (transfer names only if efr.models.transfer imports)."""
    try:
        from efr.models.transfer import TRANSFER_MODELS
    except ImportError:
        TRANSFER_MODELS = ()
    return (SEED_MODEL, *TRANSFER_MODELS, FUSION_MODEL)
