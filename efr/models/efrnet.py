"""EFR's own expression network, ``efrnet``: its architecture, the shipped weights, and its uses as a trunk.

The network (``efrnet_core``) is a VGG-style stack sized for what two CPU cores can train on
FER2013: four stages of two 3x3 Conv-BatchNorm-ReLU layers (widths 32, 64, 128, 256 by default),
2x2 max pooling after each, the 3x3 map flattened (where things are in a face matters for its
expression, so the layout is kept, not averaged away), dropout, a 256-unit dense layer (the
``features``) and a softmax over FER2013's seven classes.  It reads 48x48 grey faces in [0, 255].

``wrap_rgb`` puts the EFR model contract in front of it: RGB [0, 255] at the model's input side
-> (resize to 48) -> BT.601 grey -> the network, with built-in layers only, so the file loads in
Keras safe mode.  The shipped file, ``efr/models/weights/efrnet.keras``, is such a model with
EFR's metadata (efr.json: classes, input size, provenance, PublicTest accuracy); it was trained
by ``efr backbone`` (efr.train.backbone; docs/model-card.md) and is what the built-in model name
``efrnet`` means to ``efr predict``, ``efr evaluate``, ``efr train --model efrnet`` and
``--model fusion``'s default trunk.  Nothing is downloaded.
"""

from pathlib import Path

from efr.data.fer2013 import FER2013_EMOTIONS, SIDE
from efr.io.errors import EFRError
from efr.models.modelio import BUILTIN_MODELS

NAME = "efrnet"
# The trunk's output for transfer and fusion: the last stage's 3x3x256 map, flattened (2,304 values).  On JAFFE
# (5 subject-disjoint folds, logistic regression, a mid-training checkpoint) it separated expressions better than
# the 256-unit dense layer after it: 0.64 against 0.61, and 0.83 against 0.73 centred per person.
FEATURES_LAYER = "flatten"
BUILTIN_PATH = BUILTIN_MODELS[NAME]
# sha256 of the shipped file (docs/model-card.md states it too; a test checks both)
BUILTIN_SHA256 = "9f3cb0abc7cebb0ba29a23d25ae776eab29e9d46a1bf186c7d97f4c8b4f3a13e"
DEFAULT_WIDTHS = (32, 64, 128, 256)
WRONG_FILE_ADVICE = ("--weights for efrnet takes a file made by `efr backbone` (leave it out for the shipped one); "
                     "for the FER2013 mini-Xception file add --backbone fer2013 (fusion) or use --model fer2013")


def efrnet_core(widths=DEFAULT_WIDTHS, dense=256, dropout=0.3, num_classes=len(FER2013_EMOTIONS)):
    """The network on 48x48x1 grey faces in [0, 255] -> class probabilities (randomly initialised)."""
    import keras
    from keras import layers

    inputs = keras.Input((SIDE, SIDE, 1), name="grey_0_255")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    for stage, width in enumerate(widths, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"s{stage}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"s{stage}_bn{conv}")(x)
            x = layers.ReLU(name=f"s{stage}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"s{stage}_pool")(x)
    x = layers.Flatten(name=FEATURES_LAYER)(x)
    x = layers.Dropout(dropout, name="drop1")(x)
    x = layers.Dense(dense, use_bias=False, name="features")(x)
    x = layers.BatchNormalization(name="features_bn")(x)
    x = layers.ReLU(name="features_relu")(x)
    x = layers.Dropout(dropout, name="drop2")(x)
    # float32 output under a mixed-precision policy (a GPU run), as Keras advises for the softmax
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="efrnet")


def rgb_front(inputs, image_size):
    """RGB [0, 255] tensor at image_size -> grey 48x48 [0, 255] tensor (built-in layers only)."""
    from keras import layers

    from efr.models.transfer import grey_layer

    x = inputs
    if int(image_size) != SIDE:
        x = layers.Resizing(SIDE, SIDE, interpolation="area", name="to_48")(x)
    return grey_layer()(x)


def wrap_rgb(core, image_size=SIDE):
    """The EFR-contract classifier: RGB [0, 255] (image_size, image_size, 3) -> the core's probabilities."""
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    return keras.Model(inputs, core(rgb_front(inputs, image_size)), name="efrnet_rgb")


def core_of(model):
    """The grey efrnet network inside a wrapped (RGB) model, or the model itself."""
    for layer in model.layers:
        if layer.name == "efrnet":
            return layer
    if model.name == "efrnet":
        return model
    raise EFRError(f"model {model.name!r} is not an efrnet (no 'efrnet' network inside)")


def load_core(weights=None):
    """(grey efrnet network, weights record): the shipped file, a local .keras file, or random ('none')."""
    import keras

    from efr.models.modelio import load_model
    from efr.models.transfer import _is_none_weights, sha256_of

    if _is_none_weights(weights):
        return efrnet_core(), {"source": None, "sha256": None, "note": "random initialisation (--weights none)"}
    path = Path(weights).expanduser() if weights not in (None, "", NAME) else BUILTIN_PATH
    if not path.is_file():
        raise EFRError(f"efrnet weights {path} not found: give an efrnet .keras file made by `efr backbone`, "
                       f"or leave --weights out for the shipped one")
    try:
        model, _meta = load_model(path)
    except EFRError:
        try:  # a bare network (best.keras of an efr backbone run)
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except (ValueError, OSError, KeyError, TypeError) as err:
            raise EFRError(f"{path}: not an efrnet file Keras can load ({err}); {WRONG_FILE_ADVICE}") from err
    try:
        core = core_of(model)
    except EFRError as err:
        raise EFRError(f"{path}: {err}; {WRONG_FILE_ADVICE}") from err
    return core, {"source": "built-in efrnet" if path == BUILTIN_PATH else str(path), "path": str(path),
                            "sha256": sha256_of(path)}


def mirror(x, name):
    """A (batch, 48, 48, 1) tensor flipped left-right, with built-in layers only (a fixed permutation matrix)."""
    import numpy as np
    from keras import layers

    flip = layers.Dense(SIDE, use_bias=False, trainable=False, name=f"{name}_flip")
    flip.build((None, SIDE))
    flip.set_weights([np.eye(SIDE, dtype="float32")[::-1]])
    x = layers.Permute((1, 3, 2), name=f"{name}_width_last")(x)
    return layers.Permute((1, 3, 2), name=f"{name}_width_back")(flip(x))


def feature_model(weights=None, image_size=SIDE):
    """(frozen Keras model RGB [0, 255] -> efrnet features, weights record): fusion's efrnet trunk.

    The features are the flattened last stage (``FEATURES_LAYER``) and the 7 FER2013 probabilities, each the
    mean over the face and its mirror image: a face's expression does not change when mirrored, and the mean
    (measured on JAFFE, same folds as above) lifted the flattened features from 0.64 to 0.67, centred 0.83 to 0.87.
    """
    import keras
    from keras import layers

    core, info = load_core(weights)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    grey = rgb_front(inputs, image_size)
    inner = keras.Model(core.inputs, [core.get_layer(FEATURES_LAYER).output, core.output], name="efrnet_trunk")
    views = [inner(grey), inner(mirror(grey, "mirror"))]
    features = layers.Average(name="features_mean")([views[0][0], views[1][0]])
    probs = layers.Average(name="probabilities_mean")([views[0][1], views[1][1]])
    out = layers.Concatenate(name="trunk_features")([features, probs])
    model = keras.Model(inputs, out, name="efrnet_features")
    model.trainable = False
    return model, info
