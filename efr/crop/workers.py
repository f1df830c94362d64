"""The crop of one photo, run in worker processes: find the face, crop (or align) it, write it."""

import concurrent.futures
import threading

import cv2
from tqdm import tqdm

from efr.faces import detect as faces, landmarks
from efr.faces.align import align_crop
from efr.io.imageio import UnreadableImageError, read_image, write_image

OUTPUT_EXT = ".png"  # lossless: the crops are training data, not previews

CHECKPOINT_SECONDS = 10.0  # how often the manifest is saved during a run, for resuming

MIN_PHOTOS_PER_WORKER = 4  # below this many photos per worker, a thread is not worth starting

UNALIGNED_REASON = "no landmarks found"

# ---------------------------------------------------------------------------------------
# Cropping one photo (runs in the worker threads)

# Each worker thread's own cascade and face mesh (neither is safe to share between threads).
_WORKER = threading.local()


def init_worker(cascade_file, detect_kwargs, align="none"):
    """Thread-pool initializer: load the cascade (and the face mesh for --align eyes) once per thread."""
    _WORKER.cascade = faces.load_cascade(cascade_file)
    _WORKER.detect = detect_kwargs
    _WORKER.mesh = landmarks.FaceMesh() if align == "eyes" else None


def crop_one(task):
    """Detect, crop and write one photo. ``task`` = (source file, output file, size, margin, on_miss).

    Returns {"status", "reason", "box", "landmarks"}; a bad photo is a result, never an
    exception.  With the face mesh loaded (--align eyes) the crop is eye-levelled and
    "landmarks" holds the 468 points in crop pixels (None where the mesh found no face:
    that crop stays unaligned and its reason says so).
    """
    source, output, size, margin, on_miss = task
    try:
        image = read_image(source)
    except UnreadableImageError as err:
        return {"status": "unreadable", "reason": str(err), "box": None, "landmarks": None}
    try:
        boxes = faces.find_faces(_WORKER.cascade, image, **_WORKER.detect)
    except cv2.error as err:  # an image OpenCV decodes but cannot process; keep going
        return {"status": "unreadable", "reason": f"{source}: OpenCV failed on it ({err.err})", "box": None,
                "landmarks": None}
    reasons = []
    if boxes:
        box = faces.square_box(boxes[0], image.shape, margin)
        if len(boxes) > 1:
            reasons.append(f"{len(boxes)} faces found; kept the largest")
    elif on_miss == "center":
        box = faces.center_box(image.shape)
        reasons.append("no face found; centre square crop (--on-miss center)")
    else:
        return {"status": "no_face", "reason": "no face found by the Haar cascade", "box": None, "landmarks": None}
    mesh = _WORKER.mesh
    points = mesh.points(image, boxes[0]) if mesh is not None and boxes else None
    if points is not None:
        crop, crop_points = align_crop(image, points, size, margin)
    else:
        crop, crop_points = faces.crop_square(image, box, size), None
        if mesh is not None:
            reasons.append(f"{UNALIGNED_REASON}: unaligned crop")
    write_image(output, crop)
    return {"status": "ok", "reason": "; ".join(reasons), "box": box, "landmarks": crop_points}


def run_tasks(tasks, cascade_file, detect_kwargs, workers, progress, align="none"):
    """Yield (index, result) for every task, in a pool of ``workers`` threads (inline for 1).

    Threads, not processes: OpenCV releases the GIL while it decodes, detects, resizes and
    encodes, so 2 threads crop 1.8x one on 2 cores, with none of a process pool's ~1 s
    start-up (which made small runs slower than large ones).  While the pool runs, OpenCV's
    own thread pool is set to one thread (the workers already use every core) and restored after.
    """
    bar = tqdm(total=len(tasks), desc="cropping", unit="photo", disable=not progress, leave=False)
    try:
        if workers <= 1 or len(tasks) <= 1:
            init_worker(cascade_file, detect_kwargs, align=align)
            for index, task in enumerate(tasks):
                yield index, crop_one(task)
                bar.update()
            return
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, initializer=init_worker,
                                                     initargs=(cascade_file, detect_kwargs, align))
        try:
            for index, result in enumerate(pool.map(crop_one, tasks)):
                yield index, result
                bar.update()
        finally:
            # Ctrl-C or an error: photos not started are dropped, the ones being cropped finish (atomic writes).
            pool.shutdown(wait=True, cancel_futures=True)
            cv2.setNumThreads(cv_threads)
    finally:
        bar.close()
