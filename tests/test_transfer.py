"""Transfer models: the FER2013 trunk from a file of the published shape, the offline
download refusal, the keras.applications backbones, and the oneDNN crash guard.

No test needs the real FER2013 file or the network: a randomly initialised
mini-Xception of the published shape (64x64x1 -> 7) stands in for it.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import efr  # noqa: F401 - sets the oneDNN guard before TensorFlow is imported
from efr.models import transfer
from efr.io.errors import EFRError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fer_like_file(tmp_path_factory):
    """A random mini-Xception of the published FER2013 shape, saved as .hdf5 like the real file."""
    import keras

    keras.utils.set_random_seed(1)
    model = transfer.mini_xception((64, 64, 1), 7, seed=1)
    path = tmp_path_factory.mktemp("fer") / "mini_xception_random.hdf5"
    model.save(path)
    return path


def _one_step(model, size, classes, n=8):
    import keras

    # Eagerly: tracing the training graph of a 200-layer backbone costs 20-150 s on 2 busy
    # cores, one eager step a few seconds; graph-mode training runs in the subprocess test below.
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", run_eagerly=True)
    x = np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(n) % classes, classes)
    history = model.fit(x, y, batch_size=n, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_mini_xception_has_published_shape():
    model = transfer.mini_xception()
    assert model.input_shape == (None, 64, 64, 1)
    assert model.output_shape == (None, 7)
    # the published model has 58,423 parameters; the builder must match it layer for layer
    assert model.count_params() == 58423


@pytest.mark.slow
def test_fer2013_trunk_copied_and_new_head(fer_like_file, caplog):
    import keras

    built = transfer.build_transfer_model("fer2013", 5, weights=str(fer_like_file))
    assert built.image_size == 64
    assert built.model.input_shape == (None, 64, 64, 3)
    assert built.model.output_shape == (None, 5)
    assert built.weights_info["sha256"] == transfer.sha256_of(fer_like_file)
    assert built.weights_info["published"] is False
    assert "differs from the published" in caplog.text  # a user's file with another checksum: warned, used
    assert built.meta["model"] == "fer2013" and "grey" in built.meta["preprocessing"]

    source = keras.models.load_model(fer_like_file, compile=False)
    source_convs = [layer for layer in source.layers if isinstance(layer, keras.layers.SeparableConv2D)]
    trunk_convs = [layer for layer in built.backbone.layers if isinstance(layer, keras.layers.SeparableConv2D)]
    assert len(trunk_convs) == len(source_convs) == 8
    for theirs, ours in zip(source_convs, trunk_convs):
        for a, b in zip(theirs.get_weights(), ours.get_weights()):
            np.testing.assert_array_equal(a, b)
    # the class convolution (7 filters) is cut off: the trunk ends with the 128-channel residual sum
    assert built.backbone.output_shape == (None, 4, 4, 128)

    # phase 1: only the head trains
    built.backbone.trainable = False
    head_only = {v.path for v in built.model.trainable_weights}
    assert head_only and all(p.startswith("head_") for p in head_only)
    before = [w.copy() for w in built.backbone.get_weights()]
    _one_step(built.model, 64, 5)
    for a, b in zip(before, built.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    # phase 2: everything trains (except the fixed colour conversion)
    built.backbone.trainable = True
    assert len(built.model.trainable_weights) > len(head_only)


def test_fer2013_preprocessing_is_grey_in_unit_range():
    import keras

    inputs = keras.Input((4, 4, 3))
    grey = transfer.grey_layer()(inputs)
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(grey)
    model = keras.Model(inputs, scaled)
    rgb = np.zeros((1, 4, 4, 3), np.float32)
    rgb[0, 0, 0] = (255, 255, 255)
    rgb[0, 1, 1] = (255, 0, 0)
    out = model.predict(rgb, verbose=0)[0, :, :, 0]
    assert out[0, 0] == pytest.approx(1.0, abs=1e-3)
    assert out[2, 2] == pytest.approx(-1.0)
    assert out[1, 1] == pytest.approx(0.299 * 255 / 127.5 - 1.0, abs=1e-4)


@pytest.mark.slow
def test_fer2013_other_input_size_keeps_weights_and_saves_in_safe_mode(fer_like_file, tmp_path):
    from efr.models.modelio import load_model, save_model

    small = transfer.build_transfer_model("fer2013", 3, weights=str(fer_like_file), image_size=48)
    assert small.model.input_shape == (None, 48, 48, 3)
    reference = transfer.build_transfer_model("fer2013", 3, weights=str(fer_like_file))
    for a, b in zip(reference.backbone.get_weights(), small.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    _one_step(small.model, 48, 3)
    path = tmp_path / "m.keras"
    save_model(small.model, path, {"class_names": ["A", "B", "C"], **small.meta})
    loaded, meta = load_model(path)  # safe mode: no Lambda, built-in layers only
    x = np.random.default_rng(1).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small.model.predict(x, verbose=0), atol=1e-5)
    assert meta["weights"]["sha256"] == transfer.sha256_of(fer_like_file)


def test_fer2013_download_refuses_cleanly_offline(tmp_path, monkeypatch):
    import keras

    calls = []

    def offline_get_file(fname, origin, **kwargs):
        calls.append((fname, origin, kwargs))
        # what keras.utils.get_file raises when the host cannot be reached
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline_get_file)
    with pytest.raises(EFRError) as err:
        transfer.build_transfer_model("fer2013", 7)
    message = str(err.value)
    assert transfer.FER2013_FILENAME in message and "~/.keras/models/" in message and "--weights" in message
    assert calls and calls[0][1] == transfer.FER2013_URL
    assert calls[0][2]["file_hash"] == transfer.FER2013_SHA256


def test_fer2013_cached_file_is_used_without_network(fer_like_file, tmp_path, monkeypatch):
    # A file with the right name and checksum in Keras' cache is used as is; a damaged
    # one makes Keras try to download again, which without network is our clear error.
    import keras

    cache = tmp_path / "keras_home"
    cached = cache / "models" / transfer.FER2013_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(Path(fer_like_file).read_bytes())
    monkeypatch.setattr(transfer, "FER2013_SHA256", transfer.sha256_of(fer_like_file))
    original = keras.utils.get_file

    def unreachable(*args, **kwargs):
        kwargs["origin"] = "http://127.0.0.1:9/unreachable.hdf5"  # loopback discard port: refused at once
        return original(*args, **kwargs)

    monkeypatch.setattr(keras.utils, "get_file", unreachable)
    path, info = transfer.fer2013_weights_file(None, cache_dir=str(cache))
    assert Path(path) == cached and info["sha256"] == transfer.FER2013_SHA256

    cached.write_bytes(b"damaged")
    with pytest.raises(EFRError, match="could not download"):
        transfer.fer2013_weights_file(None, cache_dir=str(cache))


def test_missing_weights_file_and_unknown_model_are_user_errors(tmp_path):
    with pytest.raises(EFRError, match="not found"):
        transfer.build_transfer_model("fer2013", 7, weights=str(tmp_path / "nope.hdf5"))
    with pytest.raises(EFRError, match="unknown transfer model"):
        transfer.build_transfer_model("vgg99", 7)
    not_a_model = tmp_path / "junk.hdf5"
    not_a_model.write_bytes(b"not hdf5")
    with pytest.raises(EFRError, match="not a Keras model file"):
        transfer.build_transfer_model("fer2013", 7, weights=str(not_a_model))


def test_imagenet_download_refuses_cleanly_offline(monkeypatch):
    import keras
    from keras.src.utils import file_utils

    def offline_get_file(fname=None, origin=None, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno 101] Network is unreachable")

    monkeypatch.setattr(file_utils, "get_file", offline_get_file)
    monkeypatch.setattr(keras.utils, "get_file", offline_get_file)
    with pytest.raises(EFRError, match="ImageNet weights of mobilenetv3small.*~/.keras/models/"):
        transfer.build_transfer_model("mobilenetv3small", 4, image_size=32)


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("mobilenetv3small", 32), ("efficientnetb0", 32), ("resnet50", 32)])
def test_application_backbones_build_and_train(name, size):
    built = transfer.build_transfer_model(name, 4, weights="none", image_size=size)
    assert built.model.input_shape == (None, size, size, 3)
    assert built.model.output_shape == (None, 4)
    assert built.backbone is not None and built.weights_info["source"] is None
    built.backbone.trainable = False
    assert all(v.path.startswith("head_") for v in built.model.trainable_weights)
    built.backbone.trainable = True
    _one_step(built.model, size, 4, n=4)


def test_resnet_caffe_preprocessing_swaps_to_bgr_and_subtracts_means():
    import keras

    inputs = keras.Input((1, 1, 3))
    model = keras.Model(inputs, transfer.caffe_bgr_layer()(inputs))
    out = model.predict(np.array([[[[10.0, 20.0, 30.0]]]], np.float32), verbose=0)[0, 0, 0]
    np.testing.assert_allclose(out, [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-3)


def test_local_weights_file_for_a_backbone_is_loaded(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    donor = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                pooling="avg", include_preprocessing=True)
    path = tmp_path / "mnv3.weights.h5"
    donor.save_weights(path)
    built = transfer.build_transfer_model("mobilenetv3small", 3, weights=str(path), image_size=32)
    for a, b in zip(donor.get_weights(), built.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert built.weights_info["sha256"] == transfer.sha256_of(path)


def test_onednn_guard_is_set_by_importing_efr():
    code = "import os, efr; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "0"


def test_onednn_check_refuses_strided_pointwise_convs_when_onednn_is_on(monkeypatch):
    model = transfer.mini_xception()
    assert len(transfer.strided_pointwise_convs(model)) == 4  # the four residual shortcuts
    monkeypatch.setattr(transfer, "onednn_enabled", lambda: True)
    with pytest.raises(EFRError, match="TF_ENABLE_ONEDNN_OPTS=0"):
        transfer.check_onednn_safe(model, "fer2013")
    monkeypatch.setattr(transfer, "onednn_enabled", lambda: False)
    transfer.check_onednn_safe(model, "fer2013")


@pytest.mark.slow
def test_fine_tuning_mini_xception_exits_cleanly(tmp_path):
    """Regression: TF 2.21 + oneDNN crashed (SIGSEGV/SIGABRT) fine-tuning this net at 64x64.

    Runs the product's path (efr.models.build.build_model + efr.train.run's two phases) in a fresh
    process with the environment as a user has it (no TF_ENABLE_ONEDNN_OPTS), so the
    guard in efr/__init__.py is what keeps it alive.
    """
    script = textwrap.dedent(
        """
        from efr.models.build import build_model, compile_model# first, as efe_cnn.py: efr sets the guard
        from efr.train.fit import training_phases; from efr.train.settings import TrainSettings
        import numpy as np, keras
        keras.utils.set_random_seed(0)
        built = build_model("fer2013", 7, image_size=64, weights="none")
        settings = TrainSettings(model="fer2013", epochs=1, fine_tune_epochs=1, batch_size=16)
        x = np.random.default_rng(0).uniform(0, 255, (64, 64, 64, 3)).astype("float32")
        y = keras.utils.to_categorical(np.arange(64) % 7, 7)
        for phase, epochs, lr, trainable in training_phases(built, settings):
            built.backbone.trainable = trainable
            compile_model(built.model, lr)
            built.model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
            print("finished", phase, flush=True)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, f"exit code {out.returncode} (-11: segfault, -6: abort)\n{out.stderr[-2000:]}"
    assert "finished head" in out.stdout and "finished fine-tune" in out.stdout
