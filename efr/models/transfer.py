"""Transfer learning: a pretrained trunk with a new head for the dataset's emotions.

Three kinds of start:

- ``efrnet``: EFR's own expression network (efr.models.efrnet), trained on FER2013 by
  ``efr backbone`` and shipped with EFR (no download): its layers up to the flattened last stage (2,304 features),
  with a new head; 48x48 grey faces.
- ``fer2013``: the FER2013 mini-Xception of oarriaga/face_classification (MIT licence;
  64x64 greyscale faces in [-1, 1]; 7 classes).  Its convolutional trunk (everything
  before the final class convolution, global pooling and softmax) is kept and a new
  head is put on it.  The model was trained on faces, so its features fit a small
  expression set much better than ImageNet ones do.
- ``mobilenetv3small``, ``efficientnetb0``, ``resnet50``: keras.applications backbones
  (``include_top=False, pooling="avg"``) with ImageNet weights.

Every model built here follows the EFR model contract: it takes RGB float images in
[0, 255] at ``image_size`` x ``image_size`` and does its own colour conversion and
scaling inside, with built-in layers only (no Lambda), so it saves and loads in
Keras safe mode and predict.py needs nothing else.  Training in two phases (head
first with ``backbone`` frozen, then everything at a lower learning rate) is done by
efr.train.run; this module only builds.

``weights``: None means the model's own pretrained weights (the FER2013 file, or
ImageNet), downloaded by Keras on first use into ``~/.keras/models/``; a path means
that local file; ``"none"`` means random initialisation (the same architecture,
trained from scratch).
"""

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from efr.io.errors import EFRError

log = logging.getLogger(__name__)

FER2013_FILENAME = "fer2013_mini_XCEPTION.102-0.66.hdf5"
FER2013_URL = (
    "https://github.com/oarriaga/face_classification/raw/master/trained_models/emotion_models/" + FER2013_FILENAME
)
FER2013_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # the source model's outputs

# Default input side per model.  fer2013 is the source model's own 64; the ImageNet
# backbones were trained at 224, but 128 keeps CPU training of a few hundred faces in
# minutes and all three accept it (MobileNetV3's ImageNet weights come for 96-224).
DEFAULT_IMAGE_SIZES = {"efrnet": 48, "fer2013": 64, "mobilenetv3small": 128, "efficientnetb0": 128, "resnet50": 128}
TRANSFER_MODELS = tuple(DEFAULT_IMAGE_SIZES)
# Training settings a model starts from where the caller gives none (efr.train.run fills
# the rest from its general defaults).  fer2013: the best of three recipes in 5-fold
# subject-disjoint cross-validation on JAFFE (BENCHMARKS.md): train only the new head,
# for longer, in smaller batches, at a higher learning rate; 10 + 10 epochs at batch 32
# left the head undertrained.  The ImageNet backbones were not measured (no ImageNet
# weights offline), so they keep the general defaults.  efrnet: the same recipe at a lower
# learning rate with more patience (its head sees 2,304 unpooled features): on JAFFE's aligned
# crops, 5 folds x fold seeds 0-4 (bench/accuracy_cv.py), 0.666 on average against 0.644 with
# fer2013's lr 3e-3 / patience 8, better on 4 of 5 seeds; lr 5e-4 / patience 20 / 100 epochs
# gave 0.668 on seeds 0-2 (0.679 at lr 1e-3), --tta flip 0.635 on seeds 0-2.
TRAINING_DEFAULTS = {
    "fer2013": {"epochs": 60, "fine_tune_epochs": 0, "batch_size": 16, "lr": 3e-3, "patience": 8},
    "efrnet": {"epochs": 60, "fine_tune_epochs": 0, "batch_size": 16, "lr": 1e-3, "patience": 15},
}
DEFAULT_DROPOUT = 0.3

# ITU-R BT.601 luma, the weights OpenCV's RGB->grey uses (and so FER2013's greyscale).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# caffe-style ImageNet means of ResNet50's training images, in BGR order.
RESNET_BGR_MEANS = (103.939, 116.779, 123.68)

PREPROCESSING = {
    "efrnet": "RGB [0,255] -> (Resizing to 48, area) -> grey (fixed 1x1 conv, BT.601 luma) -> Rescaling(1/127.5, "
              "offset=-1)",
    "fer2013": "RGB [0,255] -> grey (fixed 1x1 conv, BT.601 luma) -> Rescaling(1/127.5, offset=-1)",
    "mobilenetv3small": "MobileNetV3 built-in preprocessing (include_preprocessing=True, expects [0,255])",
    "efficientnetb0": "EfficientNet built-in Rescaling + Normalization (expects [0,255])",
    "resnet50": "caffe: RGB->BGR and ImageNet mean subtraction (fixed 1x1 conv with bias)",
}


@dataclass
class TransferModel:
    """A built transfer model and what the run folder should record about it."""

    model: object  # keras.Model: RGB [0,255] (image_size, image_size, 3) -> class probabilities
    image_size: int
    backbone: object  # the pretrained part: freeze in phase 1, unfreeze in phase 2
    weights_info: dict = field(default_factory=dict)  # source (path or URL or None), sha256
    meta: dict = field(default_factory=dict)  # saved in the model file (efr.json)


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_none_weights(weights):
    return isinstance(weights, str) and weights.strip().lower() in ("none", "random", "scratch")


def _local_weights_file(weights, name):
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EFRError(
            f"weights file {path} for --model {name} not found: give an existing file, "
            f"or 'none' to start from random weights"
        )
    return path


def _download_failure(err, what, filename=None, url=None):
    if filename is None:  # keras.applications: the file name is in Keras' message, "URL fetch failure on URL: ..."
        match = re.search(r"URL fetch failure on (\S+?):? ", str(err))
        url = match.group(1) if match else None
        filename = url.rsplit("/", 1)[-1] if url else "the weights file"
    err = str(err).split(" -- ")[-1]  # Keras' message repeats the URL; keep the reason
    where = f" from {url}" if url else ""
    return EFRError(
        f"could not download the {what}{where} ({err}). Without internet: copy {filename} to "
        f"~/.keras/models/{filename} (Keras' cache, used as is when present), or pass the file with "
        f"--weights PATH, or use --weights none to train the same architecture from random weights"
    )


def _is_fetch_failure(err):
    # keras.utils.get_file turns every network error into a bare Exception whose text
    # starts like this (and a checksum mismatch into ValueError); anything else from a
    # model constructor is a bug and keeps its traceback.
    return "URL fetch failure" in str(err) or "corrupted file" in str(err)


# --------------------------------------------------------------------------- fer2013


def mini_xception(input_shape=(64, 64, 1), num_classes=7, l2=0.01, seed=None):
    """The FER2013 mini-Xception architecture (Arriaga et al. 2017), randomly initialised.

    Same layers, shapes and block structure as the published model: two plain 3x3
    convolutions, four residual blocks of two separable convolutions with a strided 1x1
    shortcut, then a class convolution, global average pooling and softmax.  Used for
    ``--weights none`` and by the tests (a model of the published shape without the file).
    """
    import keras
    from keras import layers

    reg = keras.regularizers.l2(l2)
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for _ in range(2):
        x = layers.Conv2D(8, 3, use_bias=False, kernel_regularizer=reg, kernel_initializer=init)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    for filters in (16, 32, 64, 128):
        shortcut = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False, kernel_initializer=init)(x)
        shortcut = layers.BatchNormalization()(shortcut)
        x = layers.SeparableConv2D(
            filters, 3, padding="same", use_bias=False, depthwise_regularizer=reg, pointwise_regularizer=reg,
            depthwise_initializer=init, pointwise_initializer=init,
        )(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(
            filters, 3, padding="same", use_bias=False, depthwise_regularizer=reg, pointwise_regularizer=reg,
            depthwise_initializer=init, pointwise_initializer=init,
        )(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.Add()([x, shortcut])
    x = layers.Conv2D(num_classes, 3, padding="same", kernel_initializer=init)(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Activation("softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mini_xception")


def fer2013_weights_file(weights=None, cache_dir=None):
    """Resolve the FER2013 model file: (path, weights_info).

    ``weights`` None or "fer2013": Keras' cache (``~/.keras/models/``), downloading it on
    first use (checksum checked by Keras).  A path: that file; its sha256 is recorded and
    a mismatch with the published file is a warning, not an error, because a user may
    bring their own retraining of the same architecture (the trunk cut below checks the
    structure).
    """
    import keras

    if weights is None or (isinstance(weights, str) and weights.strip().lower() == "fer2013"):
        try:
            path = keras.utils.get_file(
                FER2013_FILENAME, origin=FER2013_URL, file_hash=FER2013_SHA256, cache_subdir="models",
                cache_dir=cache_dir,
            )
        except Exception as err:  # noqa: BLE001 - get_file raises a bare Exception for network errors
            if _is_fetch_failure(err) or isinstance(err, OSError):
                raise _download_failure(err, "FER2013 mini-Xception weights", FER2013_FILENAME, FER2013_URL) from err
            raise
        return Path(path), {"source": FER2013_URL, "path": str(path), "sha256": FER2013_SHA256}
    path = _local_weights_file(weights, "fer2013")
    digest = sha256_of(path)
    if digest != FER2013_SHA256:
        log.warning(
            "%s: sha256 %s differs from the published FER2013 mini-Xception (%s); using it anyway "
            "(it must have the same architecture)", path, digest, FER2013_SHA256,
        )
    return path, {"source": str(path), "path": str(path), "sha256": digest, "published": digest == FER2013_SHA256}


def load_fer2013_source(path):
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise EFRError(f"{path}: not a Keras model file Keras can load ({err}); expected {FER2013_FILENAME}") from err


def cut_trunk(source):
    """The convolutional trunk of a mini-Xception-like classifier, as a keras Model.

    Found by structure, not by layer names: the trunk ends at the input of the
    convolution that feeds the final GlobalAveragePooling2D (the class convolution).
    The trunk shares its layers (and so its weights) with ``source``.
    """
    import keras

    pools = [layer for layer in source.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    if not pools:
        raise EFRError(
            f"model {source.name!r} has no GlobalAveragePooling2D: not a mini-Xception-like classifier "
            f"(expected {FER2013_FILENAME})"
        )
    class_conv = pools[-1].input._keras_history.operation
    if not isinstance(class_conv, keras.layers.Conv2D):
        raise EFRError(
            f"model {source.name!r}: the layer before global pooling is {type(class_conv).__name__}, "
            "not the class convolution of a mini-Xception"
        )
    return keras.Model(source.inputs, class_conv.input, name="fer2013_trunk")


def resize_input(source, image_size):
    """The same fully convolutional network on an image_size x image_size input, same weights."""
    import keras

    channels = source.input_shape[-1]
    new_input = keras.Input((image_size, image_size, channels))
    # the legacy .hdf5 model's input is a list of one tensor; the clone wants the same structure
    new_inputs = [new_input] if isinstance(source.input, (list, tuple)) else new_input
    resized = keras.models.clone_model(source, input_tensors=new_inputs)
    resized.set_weights(source.get_weights())
    return resized


def grey_layer(name="rgb_to_grey"):
    """A fixed 1x1 convolution RGB -> grey (BT.601), not trainable."""
    import numpy as np
    from keras import layers

    layer = layers.Conv2D(1, 1, use_bias=False, trainable=False, name=name)
    layer.build((None, None, None, 3))
    layer.set_weights([np.asarray(LUMA_WEIGHTS, dtype="float32").reshape(1, 1, 3, 1)])
    return layer


def _head(x, num_classes, dropout, pool):
    from keras import layers

    if pool:
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", name="head_predictions")(x)


def build_fer2013(num_classes, weights=None, image_size=None, dropout=DEFAULT_DROPOUT, cache_dir=None, seed=None):
    import keras
    from keras import layers

    image_size = int(image_size or DEFAULT_IMAGE_SIZES["fer2013"])
    if _is_none_weights(weights):
        source = mini_xception((image_size, image_size, 1), len(FER2013_CLASSES), seed=seed)
        weights_info = {"source": None, "sha256": None, "note": "random initialisation (--weights none)"}
    else:
        path, weights_info = fer2013_weights_file(weights, cache_dir=cache_dir)
        source = load_fer2013_source(path)
        if tuple(source.input_shape[1:]) != (64, 64, 1):
            log.warning("%s: input shape %s, expected (64, 64, 1)", path, source.input_shape[1:])
    if tuple(source.input_shape[1:3]) != (image_size, image_size):
        source = resize_input(source, image_size)
    trunk = cut_trunk(source)

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = grey_layer()(inputs)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(x)
    x = trunk(x)
    outputs = _head(x, num_classes, dropout, pool=True)
    model = keras.Model(inputs, outputs, name="fer2013_transfer")
    return TransferModel(model, image_size, trunk, weights_info, {})


# --------------------------------------------------------------------------- efrnet


def build_efrnet(num_classes, weights=None, image_size=None, dropout=DEFAULT_DROPOUT):
    """EFR's own FER2013 network (efr.models.efrnet, shipped) up to its flattened last stage, with a new head."""
    import keras

    from efr.models import efrnet

    image_size = int(image_size or DEFAULT_IMAGE_SIZES["efrnet"])
    core, weights_info = efrnet.load_core(weights)
    trunk = keras.Model(core.inputs, core.get_layer(efrnet.FEATURES_LAYER).output, name="efrnet_trunk")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    outputs = _head(trunk(efrnet.rgb_front(inputs, image_size)), num_classes, dropout, pool=False)
    return TransferModel(keras.Model(inputs, outputs, name="efrnet_transfer"), image_size, trunk, weights_info, {})


# --------------------------------------------------------------------------- keras.applications


def _applications_constructor(name):
    import keras

    return {
        "mobilenetv3small": lambda **kw: keras.applications.MobileNetV3Small(include_preprocessing=True, **kw),
        "efficientnetb0": keras.applications.EfficientNetB0,
        "resnet50": keras.applications.ResNet50,
    }[name]


def caffe_bgr_layer(name="caffe_preprocess"):
    """Fixed 1x1 convolution doing ResNet50's caffe preprocessing: RGB->BGR, minus ImageNet means."""
    import numpy as np
    from keras import layers

    swap = np.zeros((1, 1, 3, 3), dtype="float32")
    for out_channel, in_channel in enumerate((2, 1, 0)):
        swap[0, 0, in_channel, out_channel] = 1.0
    layer = layers.Conv2D(3, 1, use_bias=True, trainable=False, name=name)
    layer.build((None, None, None, 3))
    layer.set_weights([swap, -np.asarray(RESNET_BGR_MEANS, dtype="float32")])
    return layer


def build_application(name, num_classes, weights=None, image_size=None, dropout=DEFAULT_DROPOUT):
    import keras

    image_size = int(image_size or DEFAULT_IMAGE_SIZES[name])
    if _is_none_weights(weights):
        keras_weights, weights_info = None, {"source": None, "sha256": None, "note": "random initialisation"}
    elif weights is None or (isinstance(weights, str) and weights.strip().lower() == "imagenet"):
        keras_weights, weights_info = "imagenet", {"source": "imagenet (keras.applications download)", "sha256": None}
    else:
        path = _local_weights_file(weights, name)
        keras_weights = str(path)
        weights_info = {"source": str(path), "path": str(path), "sha256": sha256_of(path)}
    try:
        backbone = _applications_constructor(name)(
            include_top=False, weights=keras_weights, input_shape=(image_size, image_size, 3), pooling="avg"
        )
    except Exception as err:  # noqa: BLE001 - get_file raises a bare Exception for network errors
        if keras_weights == "imagenet" and (_is_fetch_failure(err) or isinstance(err, OSError)):
            raise _download_failure(err, f"ImageNet weights of {name}") from err
        if keras_weights not in (None, "imagenet") and isinstance(err, (ValueError, OSError, KeyError)):
            raise EFRError(f"{keras_weights}: cannot load as {name} weights without top ({err})") from err
        raise
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = caffe_bgr_layer()(inputs) if name == "resnet50" else inputs
    x = backbone(x)
    outputs = _head(x, num_classes, dropout, pool=False)
    model = keras.Model(inputs, outputs, name=f"{name}_transfer")
    return TransferModel(model, image_size, backbone, weights_info, {})


def onednn_enabled():
    """Whether TensorFlow's oneDNN CPU kernels are on (None when TensorFlow cannot tell)."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, but the only way to ask
    except ImportError:
        return None
    check = getattr(_pywrap_util_port, "IsMklEnabled", None)
    return None if check is None else bool(check())


def strided_pointwise_convs(model):
    """Names of the Conv2D layers with a 1x1 kernel and a stride > 1, nested models included."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += strided_pointwise_convs(layer)
        elif (type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1)
              and tuple(layer.strides) != (1, 1)):
            found.append(layer.name)
    return found


def check_onednn_safe(model, name):
    """Refuse a model that TensorFlow's oneDNN kernels would crash on when fine-tuned.

    TF 2.21 with oneDNN corrupts memory (SIGSEGV or SIGABRT inside fit) when it trains the
    kernel of a 1x1 stride-2 convolution on inputs of 64x64 and more.  ``import efr``
    turns oneDNN off before TensorFlow loads; this catches the cases where it could not:
    TensorFlow imported before efr, or TF_ENABLE_ONEDNN_OPTS=1 set by the user.
    """
    convs = strided_pointwise_convs(model)
    if convs and onednn_enabled():
        raise EFRError(
            f"{name} has 1x1 stride-2 convolutions ({', '.join(convs[:3])}, ...) and TensorFlow's oneDNN "
            "kernels are on: fine-tuning it crashes TensorFlow 2.21 (segmentation fault). Set the "
            "environment variable TF_ENABLE_ONEDNN_OPTS=0, or import efr before tensorflow/keras"
        )


def build_transfer_model(name, num_classes, weights=None, image_size=None, dropout=DEFAULT_DROPOUT, seed=None):
    """Build transfer model ``name`` (one of TRANSFER_MODELS) for ``num_classes`` classes.

    Returns a TransferModel; ``.model`` takes RGB [0, 255] images of ``.image_size``.
    """
    key = str(name).strip().lower()
    if key not in TRANSFER_MODELS:
        raise EFRError(f"unknown transfer model {name!r}: choose one of {', '.join(TRANSFER_MODELS)}")
    if int(num_classes) < 2:
        raise EFRError(f"a classifier needs at least 2 classes, got {num_classes}")
    if image_size is not None and int(image_size) < 32:
        raise EFRError(f"image size {image_size} is too small for {key}: use 32 or more")
    if key == "efrnet":
        built = build_efrnet(int(num_classes), weights, image_size, dropout)
    elif key == "fer2013":
        built = build_fer2013(int(num_classes), weights, image_size, dropout, seed=seed)
    else:
        built = build_application(key, int(num_classes), weights, image_size, dropout)
    check_onednn_safe(built.model, key)
    built.meta = {
        "model": key,
        "preprocessing": PREPROCESSING[key],
        "weights": dict(built.weights_info),
        "image_size": [built.image_size, built.image_size],
    }
    log.info("built %s (%d x %d input; weights: %s)", key, built.image_size, built.image_size,
             built.weights_info.get("source") or "random")
    return built
