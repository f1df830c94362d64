"""Small models and synthetic photos/videos for the predict and model I/O tests.

``tiny_model`` is an untrained CNN (fast; for schema and error tests);
``train_face_model`` fits a small CNN on faces cropped from synthetic RaFD-like photos
with the same code predict.py uses (efr.faces.detect defaults), so predictions on held-out
subjects can be checked against chance.
"""

from pathlib import Path

import cv2
import numpy as np

from efr.faces import detect as faces
from efr.io.emotions import EMOTIONS
from efr.io.imageio import read_image
from efr.models.modelio import save_model
from efr.io.rafd import parse_rafd_name
from efr.data.synthetic.render import render_face

RENDER_SIZE = (170, 256)  # (width, height): a RaFD frame at a quarter of its size


def tiny_model(image_size=32, classes=len(EMOTIONS), seed=0):
    """An untrained Keras CNN following the EFR contract (RGB [0, 255] in, scaled inside)."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((image_size, image_size, 3)),
        keras.layers.Rescaling(1.0 / 255.0),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes, activation="softmax"),
    ])


def save_tiny_model(path, image_size=32, class_names=EMOTIONS):
    model = tiny_model(image_size, len(class_names))
    save_model(model, path, {"class_names": list(class_names)})
    return Path(path)


def crop_faces(paths, size):
    """Faces cut as predict.py cuts them (largest Haar face, square, no margin): RGB uint8, labels."""
    cascade = faces.load_cascade()
    images, labels = [], []
    for path in paths:
        image = read_image(path)
        boxes = faces.detect_faces(cascade, image)
        if not boxes:
            continue
        face = faces.crop_square(image, faces.square_box(boxes[0], image.shape), size)
        images.append(cv2.cvtColor(face, cv2.COLOR_BGR2RGB))
        labels.append(EMOTIONS.index(parse_rafd_name(path).emotion))
    return np.stack(images), np.array(labels)


def train_face_model(photo_paths, path, image_size=48, epochs=40, seed=0):
    """Fit a small CNN on the faces of ``photo_paths`` and save it (with class names) to ``path``."""
    import keras

    x, y = crop_faces(photo_paths, image_size)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((image_size, image_size, 3)),
        keras.layers.Rescaling(1.0 / 255.0),
        keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(len(EMOTIONS), activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.astype(np.float32), y, epochs=epochs, batch_size=16, verbose=0)
    save_model(model, path, {"class_names": list(EMOTIONS)})
    return Path(path)


def write_video(path, subject=1, emotions=("Happy", "Surprised", "Sad"), frames_each=2, fps=5):
    """A short mp4 of synthetic faces (``frames_each`` frames per emotion); returns the frame count."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, RENDER_SIZE)
    assert writer.isOpened()
    count = 0
    for emotion in emotions:
        frame = render_face(subject, emotion, size=RENDER_SIZE)
        for _ in range(frames_each):
            writer.write(frame)
            count += 1
    writer.release()
    return count


def blank_photo(width=200, height=300, seed=0):
    """A light, noisy photo with no face in it."""
    rng = np.random.default_rng(seed)
    return (rng.normal(220, 6, (height, width, 3))).clip(0, 255).astype(np.uint8)
