"""Saving and loading EFR models with what predict.py needs to use them.

A ``.keras`` file is a zip archive; EFR adds one entry, ``efr.json``, holding the
class names, the input size and how the model was made.  Keras ignores the extra
entry, so the file still loads anywhere with ``keras.models.load_model``; EFR's
loader reads it so that nothing else (no dataset, no settings file) is needed.
Every EFR model takes RGB images with values in [0, 255] at its input size and does
its own scaling inside, so one preprocessing path serves every architecture.
"""

import json
import zipfile
from pathlib import Path

from efr.io.errors import EFRError
from efr.io.imageio import atomic_path

META_ENTRY = "efr.json"
# Models that ship with EFR, usable by name wherever a model file is taken (--model efrnet).
BUILTIN_MODELS = {"efrnet": Path(__file__).resolve().parent / "weights" / "efrnet.keras"}


def resolve_model(path):
    """A built-in model's file for its name (``efrnet``), else ``path`` itself, as a Path."""
    key = str(path).strip().lower()
    if key in BUILTIN_MODELS and not Path(path).exists():
        return BUILTIN_MODELS[key]
    return Path(path)


def save_model(model, path, meta):
    """Save ``model`` to ``path`` (.keras) atomically with ``meta`` (needs ``class_names``)."""
    if "class_names" not in meta:
        raise ValueError("model metadata needs class_names")
    meta = dict(meta)
    meta.setdefault("image_size", list(model.input_shape[1:3]))
    with atomic_path(path, keep_suffix=True) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(META_ENTRY, json.dumps(meta, indent=2))


def read_meta(path):
    """The EFR metadata of a saved model; a clear error when the file has none."""
    path = resolve_model(path)
    if not path.is_file():
        raise EFRError(f"model file {path} not found: train one with efe_cnn.py (runs/<name>/best.keras)")
    try:
        with zipfile.ZipFile(path) as archive:
            if META_ENTRY not in archive.namelist():
                raise EFRError(
                    f"{path} has no EFR metadata (class names, input size): "
                    "use a model saved by efe_cnn.py"
                )
            return json.loads(archive.read(META_ENTRY))
    except zipfile.BadZipFile as err:
        raise EFRError(f"{path} is not a .keras model file (damaged or another format): {err}") from err


def load_model(path, compile=False):
    """Load a saved EFR model in Keras safe mode; return (model, meta)."""
    import keras  # deferred: importing TensorFlow costs seconds, and most callers need only the meta

    path = resolve_model(path)
    meta = read_meta(path)
    try:
        model = keras.models.load_model(path, compile=compile, safe_mode=True)
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise EFRError(f"{path}: Keras could not load the model ({err})") from err
    return model, meta
