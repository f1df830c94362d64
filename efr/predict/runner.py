"""Runs photos through a Predictor: faces found in a pool of threads while the model classifies the
previous batch; annotated copies written as it goes."""

import collections
import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from efr.io.imageio import UnreadableImageError, read_image, write_image
from efr.io.parallel import bounded_map
from efr.predict.centring import NOT_CENTRED, grouped_probabilities, uncentred_line
from efr.predict.sources import ANNOTATED_DIR
from efr.predict.tracks import TrackCentring, _Found
from efr.predict.video import StreamRunner
from efr.predict.writers import PredictionResult, annotate

log = logging.getLogger("efr.predict")

# Photos are handed to LiteRT workers in runs; at least this many per worker (see Runner._photos_classified).
RUNS_PER_WORKER = 4


class Runner(StreamRunner):
    """Feeds photos and frames through detection (threads) and the model (batches)."""

    def __init__(self, predictor, out_dir=None, workers=None, progress=True, show=False):
        self.predictor = predictor
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.workers = workers or os.cpu_count() or 1
        self.progress = progress
        self.show = show
        self.result = PredictionResult(class_names=predictor.class_names)
        self.stopped = False  # set when the user closes the --show window
        self.tracks = None  # TrackCentring while a video or camera runs with --subject-norm

    # -- detection, in worker threads --------------------------------------------------

    def _find(self, image, source, frame):
        boxes = self.predictor.locate(image)
        return _Found(source, frame, image, boxes, self.predictor.crops(image, boxes))

    def _find_in_file(self, item):
        try:
            image = read_image(item.path)
        except UnreadableImageError as err:
            return _Found(str(item.path), None, None, [], [], error=str(err))
        found = self._find(image, str(item.path), None)
        found.rel = item.rel
        return found

    def _find_in_frame(self, task):
        index, frame, analyse, source = task
        if not analyse:
            return _Found(source, index, frame, [], [], analysed=False)
        return self._find(frame, source, index)

    # -- classification, in batches -----------------------------------------------------

    def _classified(self, found_items):
        """Yield (found, rows) in order, classifying faces batch_size at a time."""
        waiting, n_crops = [], 0
        for found in found_items:
            waiting.append(found)
            n_crops += len(found.crops)
            # Flush on a full batch of faces, or on many photos/frames without faces
            # (a long video with nobody in it must not pile up in memory).
            if n_crops >= self.predictor.batch_size or len(waiting) >= 4 * self.predictor.batch_size:
                yield from self._flush(waiting)
                waiting, n_crops = [], 0
        yield from self._flush(waiting)

    def _flush(self, waiting):
        if self.tracks is not None:  # --subject-norm on a video or camera: frame by frame, in order
            for found in waiting:
                yield found, ([] if found.error or not found.analysed else self.tracks.rows(found))
            return
        yield from self._with_rows(waiting, self.predictor.classify([c for f in waiting for c in f.crops]))

    def _with_rows(self, waiting, probs):
        """(found, its rows) for each of ``waiting``, given the probabilities of all their crops in order."""
        start = 0
        for found in waiting:
            if found.error or not found.analysed:
                yield found, []
                continue
            n = len(found.crops)
            yield found, self.predictor.rows_for(found.source, found.frame, found.boxes, probs[start : start + n])
            start += n

    # -- photos ---------------------------------------------------------------------------

    def _photos_classified(self, items):
        """Yield (found, rows) for every photo, in order.

        LiteRT models: each worker thread reads, detects, classifies and draws a run of
        photos by itself, on its own single-threaded interpreter, so no thread waits for
        another (18 % more faces/s than workers feeding one 2-thread interpreter on 2
        cores: BENCHMARKS.md).  Keras models: workers read and detect, and this thread
        classifies their faces in batches.
        """
        if not (self.predictor.classifies_in_workers and self.workers > 1):
            found_items = bounded_map(self._find_in_file, items, self.workers, window=self.window)
            for found, rows in self._classified(found_items):
                self._write_annotated(found, rows)
                yield found, rows
            return
        # Runs of at most a batch, and at least RUNS_PER_WORKER per worker, so that the last ones
        # to finish (while the other workers have nothing left) are short.
        size = max(1, min(self.predictor.batch_size, -(-len(items) // (RUNS_PER_WORKER * self.workers))))
        runs = [items[start : start + size] for start in range(0, len(items), size)]
        for pairs in bounded_map(self._run_of_photos, runs, self.workers, window=2 * self.workers):
            yield from pairs

    def _run_of_photos(self, items):
        """In a worker: [(found, rows)] for ``items``, annotated copies written, images let go."""
        found_items = [self._find_in_file(item) for item in items]
        crops = [c for f in found_items for c in f.crops]
        pairs = list(self._with_rows(found_items, self.predictor.classify(crops, in_worker=True)))
        for found, rows in pairs:
            self._write_annotated(found, rows)
            found.image = found.crops = None
        return pairs

    def _write_annotated(self, found, rows):
        if self.out_dir is not None and not found.error:
            write_image(self._annotated_path(found), annotate(found.image, rows))

    def _annotated_path(self, found):
        return self.out_dir / ANNOTATED_DIR / found.rel

    def run_images(self, items):
        bar = tqdm(total=len(items), desc="photos", unit="photo", disable=not self.progress)
        try:
            for found, rows in self._photos_classified(items):
                bar.update()
                if found.error:
                    self.result.skipped.append((found.source, found.error))
                    log.warning("skipped %s", found.error)
                    continue
                self.result.photos += 1
                self.result.rows.extend(rows)
                if self.out_dir is not None:
                    self.result.outputs.append(self._annotated_path(found))
        finally:
            bar.close()

    def run_images_grouped(self, items, subjects):
        """--subject-norm: every face's features first, then each person's mean, then the head.

        ``subjects``: {photo path: person}.  Transductive: a face's label depends on the
        other photos of the same person given in this run.  A person whose faces show too
        few expressions uncentred is not centred (efr.predict.centring): a warning names them.
        """
        bar = tqdm(total=len(items), desc="photos", unit="photo", disable=not self.progress)
        found_items = bounded_map(self._find_in_file, items, self.workers, window=self.window)
        kept, blocks, mirrored, groups = [], [], [], []
        flip = self.predictor.tta == "flip"
        try:
            for found in found_items:
                bar.update()
                if found.error:
                    self.result.skipped.append((found.source, found.error))
                    log.warning("skipped %s", found.error)
                    continue
                if found.crops:
                    blocks.append(self.predictor.features(found.crops))
                    if flip:
                        mirrored.append(self.predictor.features(found.crops, flip=True))
                    groups += [subjects[found.source]] * len(found.crops)
                found.image, found.crops = None, [len(found.crops)]
                kept.append(found)
        finally:
            bar.close()
        probs, uncentred = np.zeros((0, len(self.predictor.class_names)), np.float32), {}
        if blocks:
            views = [np.concatenate(blocks)] + ([np.concatenate(mirrored)] if flip else [])
            probs, uncentred = grouped_probabilities(self.predictor.fusion, views, groups, where="the photos given")
        if uncentred:
            sizes = collections.Counter(str(g) for g in groups)
            log.warning("%s", uncentred_line("people", uncentred, sizes, self.predictor.class_names))
        start = 0
        for found in kept:
            n = found.crops[0]
            rows = self.predictor.rows_for(found.source, found.frame, found.boxes, probs[start : start + n])
            for row, group in zip(rows, groups[start : start + n]):
                row.note = NOT_CENTRED if str(group) in uncentred else ""
            start += n
            self.result.photos += 1
            self.result.rows.extend(rows)
            if self.out_dir is not None:
                path = self._annotated_path(found)
                write_image(path, annotate(read_image(found.source), rows))
                self.result.outputs.append(path)

    # -- videos and cameras ---------------------------------------------------------------







