"""efr.models.build: the seed CNN layer by layer, build_model's dispatch, saving with metadata."""

import numpy as np
import pytest

from efr.io.errors import EFRError
from efr.models.build import BuiltModel, build_model, compile_model, seed_cnn
from efr.models.modelio import load_model, save_model


def _expected_seed_parameters(size, classes):
    # conv 3x3 same (32), pool; conv 3x3 valid (64), pool; conv 3x3 valid (128), pool; dense 64; dense classes.
    conv = (3 * 3 * 3 + 1) * 32 + (3 * 3 * 32 + 1) * 64 + (3 * 3 * 64 + 1) * 128
    side = (((size // 2) - 2) // 2 - 2) // 2
    return conv + (side * side * 128 + 1) * 64 + (64 + 1) * classes


def test_seed_cnn_is_the_original_architecture():
    model = seed_cnn(8)  # default 256 x 256, as the original
    kinds = [(type(layer).__name__, getattr(layer, "filters", None) or getattr(layer, "units", None))
             for layer in model.layers]
    assert kinds == [
        ("Rescaling", None),
        ("Conv2D", 32), ("AveragePooling2D", None),
        ("Conv2D", 64), ("AveragePooling2D", None),
        ("Conv2D", 128), ("AveragePooling2D", None),
        ("Flatten", None), ("Dense", 64), ("Dense", 8),
    ]
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [c.padding for c in convs] == ["same", "valid", "valid"]
    assert all(c.kernel_size == (3, 3) and c.activation.__name__ == "relu" for c in convs)
    assert model.layers[-2].activation.__name__ == "relu"
    assert model.layers[-1].activation.__name__ == "softmax"
    assert model.layers[0].scale == pytest.approx(1 / 255)
    assert model.input_shape == (None, 256, 256, 3)
    assert model.count_params() == _expected_seed_parameters(256, 8) == 7_466_632


def test_build_model_seed_follows_size_and_classes():
    built = build_model("seed", 5, image_size=40)
    assert isinstance(built, BuiltModel)
    assert built.backbone is None and built.image_size == 40
    assert built.model.output_shape == (None, 5)
    assert built.model.count_params() == _expected_seed_parameters(40, 5)
    assert build_model("seed", 8).image_size == 256


def test_seed_model_scales_inside_and_gives_probabilities():
    built = build_model("seed", 3, image_size=32)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    probs = built.model.predict(x, verbose=0)
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    scaled = built.model.layers[0](x).numpy()
    assert scaled.max() <= 1.0 and scaled.min() >= 0.0


def test_compile_uses_adam_and_categorical_crossentropy():
    model = compile_model(seed_cnn(3, 32), 0.0025)
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.0025)
    assert model.loss == "categorical_crossentropy"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="seed", num_classes=1), "at least 2 classes"),
        (dict(name="seed", num_classes=8, image_size=16), "too small"),
        (dict(name="seed", num_classes=8, weights="some.h5"), "random weights"),
        (dict(name="no-such-net", num_classes=8), "no-such-net"),
    ],
)
def test_build_model_refuses_bad_requests(kwargs, message):
    with pytest.raises(EFRError, match=message):
        build_model(**kwargs)


def test_saved_seed_model_reloads_with_same_predictions(tmp_path):
    built = build_model("seed", 4, image_size=32)
    compile_model(built.model, 1e-3)
    path = tmp_path / "m.keras"
    save_model(built.model, path, {"class_names": ["Angry", "Happy", "Sad", "Surprised"], **built.meta})
    model, meta = load_model(path)
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), built.model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert meta["image_size"] == [32, 32] and meta["model"] == "seed"
