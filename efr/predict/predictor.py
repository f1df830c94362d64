"""A loaded model plus the face finder that matches how its training crops were made."""

import contextlib
import logging
import queue
import threading
from pathlib import Path

import cv2
import numpy as np

from efr.faces import detect as faces
from efr.io import runstate
from efr.io.errors import EFRError
from efr.models.litert import DEFAULT_RUNTIME
from efr.predict.writers import FaceRow, NO_FACE

log = logging.getLogger("efr.predict")

DEFAULT_BATCH_SIZE = 32


# ---------------------------------------------------------------------------------------
# The model and how a face is prepared for it


def _image_size(meta, model_path):
    size = meta.get("image_size")
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return int(size[0]), int(size[1])
    raise EFRError(f"{model_path}: EFR metadata has no valid image_size ({size!r}); use a model saved by efe_cnn.py")


def check_meta(meta, model_path):
    """Class names and (height, width) from a model's EFR metadata, or a clear error."""
    names = meta.get("class_names")
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise EFRError(f"{model_path}: EFR metadata has no class_names; use a model saved by efe_cnn.py")
    return list(names), _image_size(meta, model_path)


def check_runtime(meta, runtime):
    """Refuse --runtime litert for a fusion model: its hand-made features run outside any graph LiteRT converts."""
    from efr.models.fusion import is_fusion

    if runtime == "litert" and is_fusion(meta):
        raise EFRError("fusion models run in Keras only: use --runtime keras or auto")


class Predictor:
    """A loaded model plus the face finder that matches how its training crops were made.

    The crop settings come from the model's metadata (``meta["crop"]``: cascade,
    margin, size, detection settings, as crop.py recorded them) when present, else from
    efr.faces.detect' defaults, which are crop.py's defaults; arguments override both.
    """

    def __init__(self, model, meta, model_path="model", cascade=None, margin=None, faces_only=False,
                 batch_size=DEFAULT_BATCH_SIZE, max_faces=None, runtime="keras"):
        check_runtime(meta, runtime)
        self.model = model
        self.meta = meta
        self.model_path = model_path
        self.class_names, self.image_size = check_meta(meta, model_path)
        outputs = model.output_shape[-1] if hasattr(model, "output_shape") else None
        if outputs is not None and outputs != len(self.class_names):
            raise EFRError(
                f"{model_path}: the model has {outputs} outputs but its metadata names "
                f"{len(self.class_names)} classes; the file is inconsistent: re-save it with efe_cnn.py"
            )
        crop = meta.get("crop") or {}
        self.cascade_name = cascade or crop.get("cascade") or faces.DEFAULT_CASCADE
        self.margin = float(crop.get("margin", faces.DEFAULT_MARGIN) if margin is None else margin)
        # Side of the crops the model was trained on before its pipeline resized them;
        # cropping at that side first repeats the same two resampling steps.
        self.crop_size = int(crop.get("size") or max(self.image_size))
        self.detect_kwargs = {
            "max_side": int(crop.get("detect_max_side", faces.DETECT_MAX_SIDE)),
            "scale_factor": float(crop.get("scale_factor", faces.DEFAULT_SCALE_FACTOR)),
            "min_neighbors": int(crop.get("min_neighbors", faces.DEFAULT_MIN_NEIGHBORS)),
            "min_size": float(crop.get("min_face", faces.DEFAULT_MIN_FACE)),
        }
        # crop.py's second, finer pass for photos the first one finds no face in
        self.retry_max_side = int(crop.get("retry_max_side", faces.RETRY_MAX_SIDE))
        self.faces_only = faces_only
        self.batch_size = max(1, int(batch_size))
        self.max_faces = max_faces
        faces.load_cascade(self.cascade_name)  # fail now, not in a worker thread
        self._local = threading.local()
        # Models trained on eye-levelled crops (crop.py --align eyes) get eye-levelled faces here too.
        self.align = crop.get("align") == "eyes" and not faces_only
        self.fusion = None
        from efr.models.fusion import FusionRunner, is_fusion

        if is_fusion(meta):
            self.fusion = FusionRunner(model, meta)
        # Plain classifiers run in LiteRT when it gives the same outputs (efr.models.litert); else in Keras.
        self.lite = None
        if self.fusion is None and runtime != "keras":
            from efr.models.litert import lite_classifier

            self.lite = lite_classifier(model, model_path, runtime)
        # Single-threaded interpreters that worker threads borrow to classify side by side (Runner).
        self._spare_lites = queue.SimpleQueue()
        if self.align:
            from efr.faces.landmarks import mesh_model_path

            mesh_model_path()  # fail now if the face mesh is not installed

    @property
    def subject_norm(self):
        """Whether the model centres each person's features (--subject-norm): it needs groups of faces."""
        return self.fusion is not None and self.fusion.spec.subject_norm

    def _mesh(self):
        if not hasattr(self._local, "mesh"):
            from efr.faces.landmarks import FaceMesh

            self._local.mesh = FaceMesh()
        return self._local.mesh

    def _cascade(self):
        # A CascadeClassifier is not safe to share between threads: one per thread.
        if not hasattr(self._local, "cascade"):
            self._local.cascade = faces.load_cascade(self.cascade_name)
        return self._local.cascade

    def to_model_input(self, face_bgr):
        """A BGR face crop -> RGB uint8 at the model's input size."""
        height, width = self.image_size
        if face_bgr.shape[:2] != (height, width):
            shrinking = face_bgr.shape[0] >= height and face_bgr.shape[1] >= width
            face_bgr = cv2.resize(face_bgr, (width, height),
                                  interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
        return cv2.cvtColor(face_bgr, cv2.COLOR_BGR2RGB)

    def locate(self, image):
        """Square face boxes in a BGR image, largest first (the whole image with faces_only)."""
        if self.faces_only:
            return [(0, 0, image.shape[1], image.shape[0])]
        boxes = faces.find_faces(self._cascade(), image, retry_max_side=self.retry_max_side, **self.detect_kwargs)
        boxes = [faces.square_box(b, image.shape, self.margin) for b in boxes]
        return boxes[: self.max_faces] if self.max_faces else boxes

    def face_crop(self, image, box):
        """The BGR face crop for ``box`` as crop.py cut it (eye-levelled for --align eyes models)."""
        if self.align:
            points = self._mesh().points(image, box)
            if points is not None:
                from efr.faces.align import align_crop

                return align_crop(image, points, self.crop_size, self.margin)[0]
        return faces.crop_square(image, box, self.crop_size)

    def crops(self, image, boxes):
        """The model inputs for ``boxes`` of ``image``: RGB uint8 at the model's size (fusion: BGR crops)."""
        prepare = (lambda face: face) if self.fusion is not None else self.to_model_input
        if self.faces_only:
            return [prepare(image)]
        return [prepare(self.face_crop(image, box)) for box in boxes]

    @property
    def runtime(self):
        """What classifies the faces: "litert" or "keras"."""
        return "litert" if self.lite is not None else "keras"

    @property
    def classifies_in_workers(self):
        """Whether worker threads can each classify their own photos (LiteRT: one interpreter per thread)."""
        return self.lite is not None

    @contextlib.contextmanager
    def _worker_lite(self):
        """A single-threaded LiteRT interpreter for this thread, kept for reuse by the next run."""
        try:
            lite = self._spare_lites.get_nowait()
        except queue.Empty:
            lite = self.lite.single_threaded()
        try:
            yield lite
        finally:
            self._spare_lites.put(lite)

    def _run_batch(self, batch, lite=None):
        lite = lite or self.lite  # a worker's own interpreter, else the shared one (None: Keras)
        if lite is not None:
            return lite(batch)
        return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)

    @property
    def tta(self):
        """The model's test-time augmentation ("flip": each face and its mirror image), as trained."""
        return self.meta.get("tta") or "none"

    def features(self, crops, flip=False):
        """Fusion models: the fused feature vectors of BGR crops (for per-person centring)."""
        return self.fusion.raw_features([cv2.flip(c, 1) for c in crops] if flip else crops)

    def classify(self, crops, in_worker=False):
        """Probabilities (N, classes) for a list of crops (from ``crops``), in batches.

        ``in_worker``: called from one of several threads classifying at once
        (``classifies_in_workers``); each uses its own single-threaded interpreter.
        """
        if not crops:
            return np.zeros((0, len(self.class_names)), np.float32)
        if self.fusion is not None:
            if self.subject_norm:
                raise EFRError("this model was trained with --subject-norm: predict with --subject-norm")
            return self.fusion.predict(crops, tta=self.tta)
        if in_worker and self.classifies_in_workers:
            with self._worker_lite() as lite:
                return self._classify_batches(crops, lite)
        return self._classify_batches(crops)

    def _classify_batches(self, crops, lite=None):
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = np.stack(crops[start : start + self.batch_size]).astype(np.float32)
            probs = self._run_batch(batch, lite)
            if self.tta == "flip":
                probs = (probs + self._run_batch(np.ascontiguousarray(batch[:, :, ::-1]), lite)) / 2.0
            out.append(probs)
        probs = np.concatenate(out)
        if probs.ndim != 2 or probs.shape[1] != len(self.class_names):
            raise EFRError(f"the model returned shape {probs.shape}, expected (N, {len(self.class_names)})")
        return probs

    def rows_for(self, source, frame, boxes, probs):
        if not boxes:
            return [FaceRow(source, frame, None, None, NO_FACE, None, {})]
        rows = []
        for index, (box, p) in enumerate(zip(boxes, probs)):
            best = int(np.argmax(p))
            rows.append(FaceRow(
                source, frame, index, tuple(int(v) for v in box), self.class_names[best], float(p[best]),
                {name: float(v) for name, v in zip(self.class_names, p)},
            ))
        return rows


def load_predictor(model_path, allow_unfinished=False, runtime=DEFAULT_RUNTIME, **options):
    """Load ``model_path`` (a .keras saved by EFR, in Keras safe mode) into a Predictor.

    A model from a run that did not finish (efr.io.runstate) is refused unless ``allow_unfinished``.
    ``runtime``: "auto" (LiteRT when the model converts and gives Keras' outputs, else Keras),
    "litert" or "keras" (efr.models.litert).
    """
    from efr.models.modelio import load_model, read_meta, resolve_model

    model_path = resolve_model(model_path)  # a built-in name (efrnet) -> its shipped file
    if model_path.is_dir():
        raise EFRError(f"--model {model_path} is a folder: give the .keras file, e.g. {model_path / 'best.keras'}")
    meta = read_meta(model_path)
    check_meta(meta, model_path)  # a bad file is refused before TensorFlow loads (seconds)
    check_runtime(meta, runtime)
    runstate.check_model_finished(model_path, allow_unfinished, log)
    model, meta = load_model(model_path)
    return Predictor(model, meta, model_path=model_path, runtime=runtime, **options)
