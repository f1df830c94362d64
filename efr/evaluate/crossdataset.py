"""Cross-dataset evaluation: score a trained model on a labelled photo folder it never saw.

``evaluate_folder(model, data, out)`` is what `efr evaluate` / evaluate.py call:

1. label  every photo under ``data`` as crop.py does (efr.crop.run): RaFD file names, or
          the nearest <Emotion>/ folder (aliases accepted) with the subject from
          ``--subject-regex``.  data_aug.py's copies (``__aug-`` names) are left out.
2. find   the face as predict.py does (efr.predict.predictor.Predictor: the cascade, margin and
          crop size recorded in the model), the largest face per photo; or use the whole
          image with ``faces_only`` (a Dataset split, other crops).
3. score  on the classes the model and the set share.  A photo whose emotion the model
          does not know is counted and listed, not scored; a prediction of a class the
          set does not have counts as wrong and is reported as such.  Photos without a
          face stay in the denominator of "accuracy over all photos".
4. write  into ``out`` the evidence of a training run: metrics.json, predictions.csv,
          classification_report.txt, confusion matrices (PNG, CSV), args.json and
          report.html with the misclassified faces.

The data folder is only read; ``out`` may not be inside it.
"""

import csv
import io
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from efr.evaluate import metrics as evaluate, report
from efr.data.augmented import is_augmented_name
from efr.crop.options import CropOptions
from efr.crop.sources import detect_layout, label_photos, scan_source
from efr.io.errors import EFRError
from efr.io.writable import check_writable
from efr.io.imageio import UnreadableImageError, read_image, write_text_atomic
from efr.io.runinfo import library_versions, machine_info, provenance_rows, write_json
from efr.evaluate.stats import format_interval, subject_bootstrap_interval, wilson_interval
from efr.data.synthetic.render import is_synthetic_folder

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "rafd", "folders")
KIND = "efr-evaluation"  # metrics.json's "kind": marks a folder this module may overwrite
# evaluate has no --subject-norm to drop: the model decides the centring (efr.models.features.check_groups)
EVALUATE_ADVICE = ("or evaluate a model trained without --subject-norm (the model, not an option of evaluate, "
                   "decides the centring)")
OUTPUT_FILES = ("args.json", "metrics.json", "predictions.csv", "classification_report.txt", "confusion_matrix.csv")
# Status of each photo in predictions.csv
SCORED, NO_FACE, UNREADABLE, OTHER_CLASS = "scored", "no_face", "unreadable", "class_not_in_model"


@dataclass
class EvalSettings:
    model: str
    data: str
    out: str
    faces_only: bool = False
    layout: str = "auto"
    subject_regex: str = None
    angles: tuple = None  # RaFD names: camera angles kept (None: all)
    gazes: tuple = None  # RaFD names: gazes kept (None: all)
    cascade: str = None
    margin: float = None
    batch_size: int = 32
    workers: int = None
    gallery_size: int = 48
    seed: int = 0
    exist_ok: bool = False


@dataclass
class Photo:
    """One labelled photo and what happened to it."""

    path: Path
    rel: str
    emotion: str
    subject: str
    status: str = ""
    reason: str = ""
    probs: np.ndarray = None
    face: np.ndarray = field(default=None, repr=False)  # BGR crop, kept for misclassified ones only


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict


# ----------------------------------------------------------------------------------
# Folders and labels


def check_folders(data, out, exist_ok=False):
    """Resolve --data and --out; refuse a missing data folder, an out inside it, a foreign out folder."""
    data, out = Path(data).expanduser(), Path(out).expanduser()
    if not data.is_dir():
        raise EFRError(f"--data {data}: no such folder; give a folder of labelled photos "
                       "(RaFD file names or <Emotion>/ folders)")
    if out.resolve() == data.resolve() or out.resolve().is_relative_to(data.resolve()):
        raise EFRError(f"--out {out} is inside --data {data}: evaluation never writes into the photos' folder; "
                       "choose an --out elsewhere")
    if out.exists() and not out.is_dir():
        raise EFRError(f"--out {out} is a file: give a folder")
    if out.is_dir() and any(out.iterdir()) and not exist_ok and not _made_here(out):
        raise EFRError(f"--out {out} exists and holds other files: choose a new --out, or add --exist-ok "
                       "to write into it")
    check_writable(out)
    return data, out


def _made_here(out):
    try:
        return json.loads((Path(out) / "metrics.json").read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def label_folder(data, layout="auto", subject_regex=None, angles=None, gazes=None):
    """(labelled photos, [(rel path, status, reason)] of photos left out, layout used).

    Left out: photos without a usable label (``unknown_label``) and, for RaFD names,
    those of another camera angle or gaze than ``angles`` / ``gazes`` (``filtered``).
    """
    if layout not in LAYOUTS:
        raise EFRError(f"--layout {layout}: expected one of {', '.join(LAYOUTS)}")
    images, _ = scan_source(data)
    images = [p for p in images if not is_augmented_name(p)]
    if not images:
        raise EFRError(f"no photos (jpg, png, bmp, tif) under {data}")
    relative = [p.relative_to(data).as_posix() for p in images]
    used = detect_layout(relative) if layout == "auto" else layout
    options = CropOptions(layout=used, subject_regex=subject_regex, angles=angles, gazes=gazes)
    rows = label_photos(relative, used, options)
    photos = [Photo(data / r["source"], r["source"], r["emotion"], r["subject"]) for r in rows if not r["status"]]
    unlabelled = [(r["source"], r["status"], r["reason"]) for r in rows if r["status"]]
    if not photos:
        example = f" (e.g. {unlabelled[0][0]}: {unlabelled[0][2]})" if unlabelled else ""
        raise EFRError(f"none of the {len(rows)} photos under {data} can be used{example}: expected RaFD file "
                       "names or <Emotion>/ folders (and check --angle / --gaze)")
    return photos, unlabelled, used


# ----------------------------------------------------------------------------------
# Faces and predictions


def _find_face(predictor, photo):
    """Read a photo and crop its largest face; sets photo.status for unreadable/no face."""
    try:
        image = read_image(photo.path)
    except UnreadableImageError as err:
        photo.status, photo.reason = UNREADABLE, str(err)
        return None, None
    boxes = predictor.locate(image)[:1]
    if not boxes:
        photo.status, photo.reason = NO_FACE, "no face found"
        return None, None
    # The face as crop.py cut it (eye-levelled for --align eyes models); fusion models take the BGR crop.
    face = image if predictor.faces_only else predictor.face_crop(image, boxes[0])
    return (face if predictor.fusion is not None else predictor.to_model_input(face)), face


def thumbnail(face):
    side = report.THUMBNAIL_SIDE
    return cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)


def classify_photos(predictor, photos, workers=None, progress=True):
    """Fill probs (and status) of every photo that has the model's class; faces in batches."""
    from tqdm import tqdm

    from efr.io.parallel import bounded_map

    workers = workers or os.cpu_count() or 1
    todo = [p for p in photos if not p.status]
    batch, crops = [], []

    grouped = []  # --subject-norm models: (photo, fused features, mirrored features or None)

    def flush():
        if batch and predictor.subject_norm:  # centred per person once every face is in (see _score_grouped)
            raw = predictor.features(crops)
            mirrored = predictor.features(crops, flip=True) if predictor.tta == "flip" else [None] * len(batch)
            grouped.extend(zip(list(batch), raw, mirrored))
        elif batch:
            probs = predictor.classify(crops)
            for photo, p in zip(batch, probs):
                photo.probs = p
                photo.status = SCORED
        batch.clear()
        crops.clear()

    bar = tqdm(total=len(todo), desc="photos", unit="photo", disable=not progress)
    try:
        for photo, (model_input, face) in bounded_map(lambda p: (p, _find_face(predictor, p)), todo, workers,
                                                      window=4 * workers + 8):
            bar.update()
            if model_input is None:
                continue
            photo.face = thumbnail(face)  # small: only misclassified faces are shown
            batch.append(photo)
            crops.append(model_input)
            if len(batch) >= predictor.batch_size:
                flush()
        flush()
    finally:
        bar.close()
    if grouped:
        _score_grouped(predictor, grouped)


def _score_grouped(predictor, grouped):
    """A --subject-norm model: each face centred on the mean of the same person's faces (TRANSDUCTIVE)."""
    import numpy as np

    from efr.models.features import subject_means

    fusion = predictor.fusion
    subjects = [photo.subject for photo, _, _ in grouped]
    views = [np.stack([raw for _, raw, _ in grouped])]
    if grouped[0][2] is not None:
        views.append(np.stack([mirrored for _, _, mirrored in grouped]))
    where = "the evaluated photos"
    probs = sum(fusion.probabilities(v, subject_means(v, subjects, where=where, advice=EVALUATE_ADVICE)) for v in views)
    for (photo, _, _), p in zip(grouped, probs / len(views)):
        photo.probs = p
        photo.status = SCORED


# ----------------------------------------------------------------------------------
# Scores


def score(photos, class_names, seed=0):
    """The numbers of an evaluation (a dict for metrics.json) from classified photos."""
    scored = [p for p in photos if p.status == SCORED]
    no_face = [p for p in photos if p.status == NO_FACE]
    set_classes = [c for c in class_names if any(p.emotion == c for p in photos if p.status != OTHER_CLASS)]
    index = {c: i for i, c in enumerate(class_names)}
    y_true = np.array([index[p.emotion] for p in scored], dtype=int)
    probs = np.stack([p.probs for p in scored]) if scored else np.zeros((0, len(class_names)))
    y_pred = probs.argmax(axis=1) if scored else np.zeros(0, dtype=int)
    correct = y_pred == y_true
    outside = [class_names[i] for i in y_pred if class_names[i] not in set_classes]
    subjects = [p.subject for p in scored]
    known = all(subjects) and bool(subjects)
    shared = [index[c] for c in set_classes]
    from sklearn.metrics import f1_score

    macro_f1 = float(f1_score(y_true, y_pred, labels=shared, average="macro", zero_division=0)) if scored else 0.0
    readable = len(scored) + len(no_face)
    return {
        "kind": KIND,
        "model_classes": list(class_names),
        "set_classes": set_classes,
        "classes_not_in_set": [c for c in class_names if c not in set_classes],
        "photos": {"labelled": len(photos), "scored_faces": len(scored), "no_face": len(no_face),
                   "unreadable": sum(p.status == UNREADABLE for p in photos),
                   "class_not_in_model": sum(p.status == OTHER_CLASS for p in photos)},
        "accuracy_faces": float(correct.mean()) if scored else 0.0,
        "accuracy_faces_ci95": list(wilson_interval(int(correct.sum()), len(scored))),
        "accuracy_all_photos": float(correct.sum() / readable) if readable else 0.0,
        "accuracy_all_photos_ci95": list(wilson_interval(int(correct.sum()), readable)),
        "accuracy_faces_ci95_subject_bootstrap": (
            None if not known else _listed(subject_bootstrap_interval(correct, subjects, seed=seed))),
        "test_subject_count": len(set(subjects)) if known else None,
        "chance_accuracy": 1.0 / len(set_classes) if set_classes else 0.0,
        "macro_f1_shared_classes": macro_f1,
        "answers_outside_set": {"count": len(outside), "fraction": len(outside) / len(scored) if scored else 0.0,
                                "by_class": dict(Counter(outside))},
    }


def _listed(interval):
    return None if interval is None else list(interval)


# ----------------------------------------------------------------------------------
# Files


def predictions_csv(photos, class_names):
    """One row per labelled photo: path, subject, true, status, predicted, confidence, p_<class>."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "subject", "true", "status", "predicted", "confidence", *[f"p_{c}" for c in class_names]])
    for photo in photos:
        if photo.probs is None:
            writer.writerow([photo.rel, photo.subject, photo.emotion, photo.status, "", "", *[""] * len(class_names)])
            continue
        best = int(np.argmax(photo.probs))
        writer.writerow([photo.rel, photo.subject, photo.emotion, photo.status, class_names[best],
                         f"{photo.probs[best]:.6f}", *[f"{v:.6f}" for v in photo.probs]])
    return buffer.getvalue()


def gallery_items(photos, class_names, limit):
    """Misclassified faces, most confident first, with their crops for the thumbnails."""
    wrong = [p for p in photos if p.status == SCORED and class_names[int(np.argmax(p.probs))] != p.emotion]
    wrong.sort(key=lambda p: -float(np.max(p.probs)))
    return [{"path": p.rel, "true": p.emotion, "predicted": class_names[int(np.argmax(p.probs))],
             "confidence": float(np.max(p.probs)), "subject": p.subject, "image": p.face} for p in wrong[:limit]], \
        len(wrong)


TRAINED_SPLITS = ("Train", "Valid")  # the Dataset splits a model's weights (or its early stopping) saw


def training_overlap(meta, photos):
    """{"files": n, "subjects": [ids], "examples": [...]}: the evaluated photos the model was trained on.

    The model records its Dataset (``meta["dataset"]``) and the folder crop read
    (``meta["crop"]["src"]``); the Dataset's manifest lists which source photos and
    subjects went into Train and Valid.  A photo is the same file when its path is one
    of those sources or their crops; subjects are compared by id (RaFD numbers,
    --subject-regex), which names the same people only within one collection.
    """
    from efr.io.manifest import read_manifest

    dataset = Path(str(meta.get("dataset") or ""))
    src = (meta.get("crop") or {}).get("src")
    if not str(meta.get("dataset") or "") or not dataset.is_dir():
        return {"files": 0, "subjects": [], "examples": [], "checked": False}
    trained = [r for r in read_manifest(dataset) if r["split"] in TRAINED_SPLITS and r["status"] == "ok"]
    paths = {(dataset / r["output"]).resolve() for r in trained if r["output"]}
    if src:
        paths |= {(Path(src) / r["source"]).resolve() for r in trained if r["source"] and r["kind"] == "original"}
    same = [p for p in photos if p.path.resolve() in paths]
    subjects = {r["subject"] for r in trained if r["subject"]}
    shared = sorted({p.subject for p in photos if p.subject} & subjects)
    return {"files": len(same), "subjects": shared, "examples": [p.rel for p in same[:3]], "checked": True}


def overlap_line(overlap):
    """The warning for an evaluation on the model's own training data, or None."""
    if not overlap or not (overlap["files"] or overlap["subjects"]):
        return None
    parts = []
    if overlap["files"]:
        parts.append(f"{overlap['files']} of these photos are ones the model was trained on "
                     f"(e.g. {', '.join(overlap['examples'])})")
    if overlap["subjects"]:
        listed = ", ".join(overlap["subjects"][:8]) + (", ..." if len(overlap["subjects"]) > 8 else "")
        parts.append(f"{len(overlap['subjects'])} subject id(s) are also in its Train/Valid split ({listed})")
    return ("NOT A HELD-OUT SCORE: " + "; ".join(parts) + ": the accuracy is optimistic; evaluate on photos "
            "of people the model never saw")


def summary_rows(metrics, settings, meta):
    counts = metrics["photos"]
    outside = metrics["answers_outside_set"]
    subjects = metrics["test_subject_count"]
    overlap = overlap_line(metrics.get("training_overlap"))
    rows = [("WARNING", overlap)] if overlap else []
    rows += [
        ("model", f"{settings.model} ({meta.get('model', '?')}, trained on {meta.get('dataset', '?')})"),
        ("evaluated on", settings.data),
        ("photos labelled", counts["labelled"]),
        ("faces scored / no face found / unreadable", f"{counts['scored_faces']} / {counts['no_face']} / "
                                                      f"{counts['unreadable']}"),
        ("photos of a class the model lacks (not scored)", counts["class_not_in_model"]),
        ("accuracy over faces found" + (" (TRANSDUCTIVE: each person's faces centred on their own mean, "
                                        "--subject-norm model)" if metrics.get("transductive") else ""),
         metrics["accuracy_faces"]),
        ("95% interval (Wilson, faces)", format_interval(metrics["accuracy_faces_ci95"])),
    ]
    if metrics["accuracy_faces_ci95_subject_bootstrap"]:
        rows.append(("95% interval (bootstrap over subjects)",
                     format_interval(metrics["accuracy_faces_ci95_subject_bootstrap"])))
    rows += [
        ("accuracy over all photos (no face = wrong)", metrics["accuracy_all_photos"]),
        ("95% interval (Wilson, all photos)", format_interval(metrics["accuracy_all_photos_ci95"])),
        ("test photos / subjects", f"{counts['scored_faces']} / {'unknown' if subjects is None else subjects}"),
        ("chance accuracy (shared classes)", metrics["chance_accuracy"]),
        ("macro-F1 (shared classes)", metrics["macro_f1_shared_classes"]),
        ("answers with a class the set lacks", f"{outside['count']} ({outside['fraction']:.1%})"),
    ]
    return rows


def write_outputs(out, photos, metrics, class_names, settings, meta, args):
    """Every file of an evaluation folder; returns the report path."""
    scored = [p for p in photos if p.status == SCORED]
    index = {c: i for i, c in enumerate(class_names)}
    y_true = np.array([index[p.emotion] for p in scored], dtype=int)
    probs = np.stack([p.probs for p in scored])
    per_class = evaluate.write_evaluation(out, y_true, probs, class_names, title_suffix=f", {Path(settings.data).name}")
    metrics.update(per_class_recall=per_class["per_class_recall"], per_class_precision=per_class["per_class_precision"],
                   per_class_f1=per_class["per_class_f1"], support=per_class["support"],
                   confusion_matrix=per_class["confusion_matrix"])
    write_text_atomic(out / "predictions.csv", predictions_csv(photos, class_names))
    write_json(out / "metrics.json", metrics)
    gallery, n_wrong = gallery_items(photos, class_names, settings.gallery_size)
    set_classes = metrics["set_classes"]
    flags = evaluate.report_flags({c: metrics["per_class_recall"][c] for c in set_classes},
                                  metrics["chance_accuracy"], metrics["support"],
                                  test_subjects=metrics["test_subject_count"],
                                  synthetic=is_synthetic_folder(settings.data))
    if metrics["classes_not_in_set"]:
        flags.insert(0, f"The set has no {', '.join(metrics['classes_not_in_set'])} photos: scored on the "
                        f"{len(set_classes)} shared classes; the model answered with a class the set lacks "
                        f"{metrics['answers_outside_set']['count']} time(s) (counted as wrong).")
    if metrics["photos"]["no_face"]:
        flags.append(f"No face was found in {metrics['photos']['no_face']} photo(s) (listed below): they count "
                     "as wrong in the accuracy over all photos.")
    not_scored = [(p.rel, p.status, p.reason) for p in photos if p.status in (NO_FACE, UNREADABLE, OTHER_CLASS)]
    not_scored += [tuple(left_out) for left_out in args["unlabelled"]]
    return report.write_report(
        out / "report.html",
        f"EFR evaluation of {Path(settings.model).name} on {Path(settings.data).name}",
        summary_rows(metrics, settings, meta),
        tables=[("Per class (classes of the set)", ("class", "precision", "recall", "F1", "support"),
                 [(c, metrics["per_class_precision"][c], metrics["per_class_recall"][c], metrics["per_class_f1"][c],
                   metrics["support"][c]) for c in set_classes]),
                ("Photos not scored", ("photo", "status", "reason"), not_scored or [("(none)", "", "")])],
        figures=[("confusion matrix (counts)", out / "confusion_matrix.png"),
                 ("confusion matrix (row-normalised)", out / "confusion_matrix_normalized.png")],
        gallery=gallery,
        gallery_total=n_wrong,
        notes=["Rows are the set's true classes, columns the model's answers (all of its classes)."],
        flags=flags,
        provenance=provenance_rows(args["versions"], args["started_utc"]),
        links=report.existing_links(out, OUTPUT_FILES),
    )


# ----------------------------------------------------------------------------------
# The whole evaluation


def evaluate_folder(settings):
    """Score ``settings.model`` on the labelled photos of ``settings.data``; write ``settings.out``."""
    from efr.models.modelio import read_meta
    from efr.predict.predictor import check_meta, load_predictor

    if settings.batch_size < 1:
        raise EFRError(f"--batch-size {settings.batch_size}: expected 1 or more")
    data, out = check_folders(settings.data, settings.out, settings.exist_ok)
    class_names, _ = check_meta(read_meta(settings.model), settings.model)  # before the slow work
    photos, unlabelled, layout = label_folder(data, settings.layout, settings.subject_regex, settings.angles,
                                              settings.gazes)
    for photo in photos:
        if photo.emotion not in class_names:
            photo.status, photo.reason = OTHER_CLASS, f"the model has no class {photo.emotion}"
    if all(p.status == OTHER_CLASS for p in photos):
        raise EFRError(f"the model's classes ({', '.join(class_names)}) and the set's share none")
    log.info("%s: %d labelled photo(s) (%s layout), %d left out (no label, or --angle/--gaze)", data, len(photos),
             layout, len(unlabelled))
    predictor = load_predictor(settings.model, cascade=settings.cascade, margin=settings.margin,
                               faces_only=settings.faces_only, batch_size=settings.batch_size, max_faces=1)
    classify_photos(predictor, photos, settings.workers, progress=log.isEnabledFor(logging.INFO))
    if not any(p.status == SCORED for p in photos):
        raise EFRError(f"no face found in any of the {len(photos)} photos under {data}; if they are already "
                       "face crops, add --faces-only")
    out.mkdir(parents=True, exist_ok=True)
    args = {"settings": asdict(settings), "layout": layout, "model_meta": {k: v for k, v in predictor.meta.items()
                                                                          if k != "crop"},
            "crop": predictor.meta.get("crop"), "unlabelled": unlabelled,
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": library_versions(), "machine": machine_info()}
    write_json(out / "args.json", args)
    metrics = score(photos, class_names, settings.seed)
    metrics["transductive"] = bool(predictor.subject_norm)
    metrics["training_overlap"] = training_overlap(predictor.meta, photos)
    if overlap_line(metrics["training_overlap"]):
        log.warning("warning: %s", overlap_line(metrics["training_overlap"]))
    left_out = Counter(status for _, status, _ in unlabelled)
    metrics["left_out"] = {"unknown_label": left_out.get("unknown_label", 0), "filtered": left_out.get("filtered", 0)}
    report_path = write_outputs(out, photos, metrics, class_names, settings, predictor.meta, args)
    log.info("accuracy over faces %.3f %s, over all photos %.3f; report %s", metrics["accuracy_faces"],
             format_interval(metrics["accuracy_faces_ci95"]), metrics["accuracy_all_photos"], report_path)
    return EvalResult(out, metrics)
