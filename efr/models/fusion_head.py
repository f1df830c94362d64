"""The fusion model's head: a multinomial logistic regression on the fused, standardised features,
its strength chosen on Valid, and the same head as a Keras layer stack."""

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)  # L2 strengths tried; the Valid split picks one


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


def _standardiser(x, blocks):
    """(mean, scale) of ``x``; with ``blocks`` each part is also scaled by sqrt(its width)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    if blocks:
        scale = scale * np.concatenate([np.full(int(b), np.sqrt(b)) for b in blocks])
    return mean, scale


def _fit_logistic(z, y, c, seed, num_classes):
    """(weights, bias) of an L2 multinomial logistic regression of strength ``c``."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    model = LogisticRegression(C=c, max_iter=3000, random_state=seed)
    # One BLAS thread: these matrices are small, and two threads on a busy 2-core machine made
    # the fit ten times slower (measured: 0.9 s against 10.7 s for the six fits on JAFFE).
    with threadpool_limits(1):
        model.fit(z, y)
    return _full_coefficients(model, num_classes)


def fit_head(raw_train, y_train, raw_valid, y_valid, num_classes, offsets_train=None, offsets_valid=None, seed=0,
             c_grid=C_GRID, blocks=None, fill=None, refit=True):
    """Fit the softmax head; C by Valid log-loss.  ``offsets_*``: per-person means to subtract (or None).

    ``blocks``: widths of the fused parts; each part is scaled by 1/sqrt(width) after
    standardising, so every part carries the same total variance (HOG's 1764 values
    would otherwise outweigh the trunk's 135 by their number alone).

    ``refit``: once Valid has chosen C, the head is fitted again with that C on Train and
    Valid together (their own standardisation), as a grid search refits on all it was given:
    with a few people per split, the Valid people are too many to leave out.  Measured on
    JAFFE, 5 subject-disjoint folds x 5 fold seeds (bench/accuracy_cv.py's protocol): inductive
    0.672 -> 0.695, better in 4 of 5 seeds; with --subject-norm 0.839 -> 0.843.  ``path``
    keeps the Train-only fits that chose C.
    """
    if fill is None:
        fill = np.nanmean(raw_train, axis=0)
        fill = np.where(np.isfinite(fill), fill, 0.0).astype(np.float32)
    x_train = fill_missing(raw_train, fill) - (0 if offsets_train is None else offsets_train)
    x_valid = fill_missing(raw_valid, fill) - (0 if offsets_valid is None else offsets_valid)
    mean, scale = _standardiser(x_train, blocks)
    z_train, z_valid = (x_train - mean) / scale, (x_valid - mean) / scale

    best, path = None, []
    for c in c_grid:
        weights, bias = _fit_logistic(z_train, y_train, c, seed, num_classes)
        p_train, p_valid = _softmax(z_train @ weights + bias), _softmax(z_valid @ weights + bias)
        row = {"C": c, "loss": _log_loss(p_train, y_train), "accuracy": float((p_train.argmax(1) == y_train).mean()),
               "val_loss": _log_loss(p_valid, y_valid), "val_accuracy": float((p_valid.argmax(1) == y_valid).mean())}
        path.append(row)
        if best is None or row["val_loss"] < best[0]["val_loss"]:
            best = (row, weights, bias)
    row, weights, bias = best
    log.info("fusion head: C=%g chosen by Valid log-loss %.4f (accuracy %.3f)", row["C"], row["val_loss"],
             row["val_accuracy"])
    if refit and len(y_valid):
        x_all = np.concatenate([x_train, x_valid])
        mean, scale = _standardiser(x_all, blocks)
        weights, bias = _fit_logistic((x_all - mean) / scale, np.concatenate([y_train, y_valid]), row["C"], seed,
                                      num_classes)
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


def head_predict(head, x):
    return _softmax(((x - head.mean) / head.scale) @ head.weights + head.bias).astype(np.float32)
