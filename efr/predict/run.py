"""Stage 4: the emotion of every face in photos, folders, videos or a camera.

What happens, in order:

1. load   the model and its EFR metadata (class names, input size, and the crop
          settings it was trained with when recorded); a file without them is refused.
2. find   faces with the same code as crop.py (efr.faces.detect: the same Haar cascade,
          detection settings, square box and margin), in a pool of threads (OpenCV
          releases the GIL) while the model works on the previous batch.
3. crop   each face square, resize it to the model's input size, BGR -> RGB (the model
          contract: RGB float in [0, 255]; the model scales inside).
4. classify faces in batches of ``batch_size`` (LiteRT: each worker thread classifies
          its own runs of photos on its own single-threaded interpreter).
5. report one FaceRow per face (file or frame, box, label, confidence, probability per
          class); a photo or analysed frame with no face gets one row labelled
          ``no_face`` with no probabilities, so nothing is silently dropped.
6. write  (optional) predictions.csv / predictions.json and annotated copies of the
          photos or an annotated video, each atomically, into an output folder.

A file that cannot be read is skipped, counted and reported; only an unusable model
or a run in which nothing at all could be read is an error.  Input files are never
written: output folders inside an input folder are left out of the scan.
"""

import logging
from pathlib import Path

import cv2

from efr.io.errors import EFRError
from efr.io.writable import check_writable
from efr.models.litert import DEFAULT_RUNTIME, RUNTIMES
from efr.predict.predictor import DEFAULT_BATCH_SIZE, Predictor, load_predictor
from efr.predict.runner import Runner
from efr.predict.sources import collect_inputs, photo_subjects
from efr.predict.video import check_gui
from efr.predict.writers import FORMATS, write_predictions

log = logging.getLogger("efr.predict")


def predict(model_path, inputs=(), camera=None, out_dir=None, fmt="csv", batch_size=DEFAULT_BATCH_SIZE,
            every=1, max_frames=None, faces_only=False, cascade=None, margin=None, max_faces=None, show=False,
            workers=None, progress=True, subject_norm=False, subject_regex=None, allow_unfinished=False,
            runtime=DEFAULT_RUNTIME):
    """Predict every face in ``inputs`` (photos, folders, videos) or a camera; return a PredictionResult.

    ``model_path``: a model file, or a Predictor already loaded (load_predictor) to reuse it
    across calls (then the loading options, cascade, margin, batch_size, max_faces and
    runtime, are the Predictor's own).

    Raises EFRError for an unusable model, a missing input path, or when nothing at all
    could be read.  With ``out_dir``: writes predictions.<fmt> and annotated copies.
    ``subject_norm``: for fusion models trained with --subject-norm: faces are centred on
    their person's mean (photos: people from RaFD names or ``subject_regex``; videos and
    cameras: the running mean of each face track).
    """
    _check_options(inputs, camera, fmt, batch_size, every, max_frames, margin, max_faces, workers, runtime)
    if show:
        check_gui()
    if out_dir is not None:
        check_writable(out_dir)  # before the model loads and every face is found, not after
    items = collect_inputs(inputs, out_dir) if inputs else []
    if inputs and not items:
        raise EFRError(f"no photos or videos found in {', '.join(str(i) for i in inputs)}")
    subjects = None
    if subject_norm:
        # Photos are grouped by person; video and camera faces by face track (TrackCentring).
        subjects = photo_subjects([i for i in items if i.kind == "image"], subject_regex)
    if isinstance(model_path, Predictor):
        predictor, model_path = model_path, model_path.model_path
        if predictor.faces_only != bool(faces_only):
            raise EFRError("faces_only differs from the loaded Predictor's: load it with faces_only="
                           f"{bool(faces_only)}")
    else:
        predictor = _load(model_path, items, camera, allow_unfinished, cascade, margin, faces_only, batch_size,
                          max_faces, runtime)
    _check_subject_norm(predictor, model_path, subject_norm)
    log.info("model %s: %d classes (%s), input %dx%d, run by %s", model_path, len(predictor.class_names),
             ", ".join(predictor.class_names), predictor.image_size[1], predictor.image_size[0], predictor.runtime)
    runner = Runner(predictor, out_dir=out_dir, workers=workers, progress=progress, show=show)
    try:
        _run_all(runner, items, subjects, camera, every, max_frames)
    finally:
        if show:
            cv2.destroyAllWindows()
    result = runner.result
    if not result.rows:
        raise EFRError(
            f"nothing could be read: {len(result.skipped)} input(s) skipped"
            + (f" (first: {result.skipped[0][1]})" if result.skipped else "")
        )
    if out_dir is not None:
        result.predictions_file = write_predictions(result, out_dir, fmt, model_path)
        result.outputs.append(result.predictions_file)
    return result


def _check_options(inputs, camera, fmt, batch_size, every, max_frames, margin, max_faces, workers, runtime):
    """Refuse unusable options (EFRError) before anything is read."""
    if fmt not in FORMATS:
        raise EFRError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if camera is None and not inputs:
        raise EFRError("nothing to predict: give photos, folders or videos, or --camera INDEX")
    if camera is not None and inputs:
        raise EFRError("give either input files/folders or --camera, not both")
    if int(every) < 1:
        raise EFRError(f"--every {every}: expected 1 or more (analyse every Nth frame)")
    if int(batch_size) < 1:
        raise EFRError(f"--batch-size {batch_size}: expected 1 or more")
    if runtime not in RUNTIMES:
        raise EFRError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    for option, value, least in (("--max-frames", max_frames, 1), ("--max-faces", max_faces, 1),
                                 ("--workers", workers, 1), ("--camera", camera, 0)):
        if value is not None and int(value) < least:
            raise EFRError(f"{option} {value}: expected {least} or more")
    if margin is not None and not 0.0 <= float(margin) <= 2.0:
        raise EFRError(f"--margin {margin}: expected a fraction of the face side between 0 and 2 (e.g. 0.1)")


def _load(model_path, items, camera, allow_unfinished, cascade, margin, faces_only, batch_size, max_faces, runtime):
    """load_predictor for this job; runtime "auto" runs a short job by Keras rather than converting for LiteRT."""
    if runtime == "auto" and Path(model_path).is_file():
        from efr.models.litert import worth_converting

        photos = sum(1 for i in items if i.kind == "image")
        if not worth_converting(model_path, photos, len(items) - photos + (camera is not None)):
            runtime = "keras"  # a short job: converting for LiteRT would cost more than it saves
    return load_predictor(model_path, allow_unfinished=allow_unfinished, cascade=cascade, margin=margin,
                          faces_only=faces_only, batch_size=batch_size, max_faces=max_faces, runtime=runtime)


def _check_subject_norm(predictor, model_path, subject_norm):
    """Refuse --subject-norm for a model trained without it, and its absence for one trained with it."""
    if predictor.subject_norm and not subject_norm:
        raise EFRError(
            f"{model_path} was trained with --subject-norm: it classifies a face relative to the other photos of "
            "the same person, so predict with --subject-norm (people from RaFD names or --subject-regex)"
        )
    if subject_norm and not predictor.subject_norm:
        raise EFRError(f"--subject-norm: {model_path} was not trained with --subject-norm (efe_cnn.py --model "
                       "fusion --subject-norm); leave the option out")


def _run_all(runner, items, subjects, camera, every, max_frames):
    """Run the camera, then the photos (grouped by person with ``subjects``), then each video until stopped."""
    if camera is not None:
        runner.run_camera(camera, every=every, max_frames=max_frames)
    images = [i for i in items if i.kind == "image"]
    videos = [i for i in items if i.kind == "video"]
    if images and subjects is not None:
        runner.run_images_grouped(images, subjects)
    elif images:
        runner.run_images(images)
    for item in videos:
        if runner.stopped:
            break
        runner.run_video(item, every=every, max_frames=max_frames)
