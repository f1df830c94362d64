"""Faces followed across the frames of a video: boxes matched by overlap, a face's probabilities centred
over its track."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --subject-norm on videos and cameras: a face track's first frames, before it has enough to centre on
TOO_FEW_FRAMES = "too_few_frames"


# ---------------------------------------------------------------------------------------
# Running


@dataclass
class _Found:
    """A photo or frame after detection, waiting for its faces to be classified."""

    source: str
    frame: int | None
    image: object  # BGR array, or None when it could not be read
    boxes: list
    crops: list
    error: str = ""
    analysed: bool = True  # video frames between --every steps are only drawn, not analysed
    rel: Path | None = None  # photos: the annotated copy's path under annotated/


def box_iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / float(aw * ah + bw * bh - inter) if inter else 0.0


class TrackCentring:
    """--subject-norm on videos and cameras: each face is centred on the running mean of its face track.

    A track follows a face from one analysed frame to the next by box overlap (IoU at
    least ``min_iou``); a face that overlaps no track of the previous frame starts a new
    one.  A track's first ``min_group - 1`` faces get the label ``too_few_frames`` and no
    probabilities: a mean of fewer faces would centre away the expression itself.  So
    would a mean of faces that all show one or two expressions: while a track's uncentred
    labels show fewer than efr.predict.centring.MIN_EXPRESSIONS, its faces keep their
    uncentred prediction with the note ``not_centred`` (``warning`` names those tracks).
    Transductive like the photo case: a face's label depends on the track's earlier frames.
    """

    def __init__(self, predictor, min_group=None, min_iou=0.3):
        from efr.models.features import MIN_GROUP

        self.predictor = predictor
        self.min_group = int(min_group or MIN_GROUP)
        self.min_iou = min_iou
        self.tracks = []  # [{"id", "box", "sum", "count", "labels"}] of the previous analysed frame
        self.uncentred = {}  # track id -> [faces, expressions shown] while its faces were left uncentred
        self._next_id = 0

    def _match(self, boxes):
        """Index of the previous frame's track for each box, or None (greedy by overlap)."""
        pairs = sorted(((box_iou(b, t["box"]), i, j) for i, b in enumerate(boxes) for j, t in enumerate(self.tracks)),
                       reverse=True)
        matched, used = [None] * len(boxes), set()
        for iou, i, j in pairs:
            if iou >= self.min_iou and matched[i] is None and j not in used:
                matched[i] = j
                used.add(j)
        return matched

    def _new_track(self, vector):
        self._next_id += 1
        return {"id": self._next_id - 1, "sum": np.zeros_like(vector), "count": 0, "labels": []}

    def rows(self, found):
        from efr.predict.centring import NOT_CENTRED, expressions_shown, plain_offsets, too_alike

        predictor = self.predictor
        if not found.boxes:
            return predictor.rows_for(found.source, found.frame, found.boxes, [])
        raw = predictor.features(found.crops)
        plain = predictor.fusion.probabilities(raw, plain_offsets(predictor.fusion, raw))
        tracks = []
        for box, index, vector, p in zip(found.boxes, self._match(found.boxes), raw, plain):
            track = dict(self.tracks[index]) if index is not None else self._new_track(vector)
            track.update(box=box, sum=track["sum"] + vector, count=track["count"] + 1,
                         labels=track["labels"] + [int(np.argmax(p))])
            tracks.append(track)
        self.tracks = tracks
        means = np.stack([t["sum"] / t["count"] for t in tracks])
        probs = predictor.fusion.probabilities(raw, means)
        for i, track in enumerate(tracks):
            if track["count"] >= self.min_group and too_alike(track["labels"]):
                probs[i] = plain[i]
        rows = predictor.rows_for(found.source, found.frame, found.boxes, probs)
        for row, track in zip(rows, tracks):
            if track["count"] < self.min_group:
                row.label, row.confidence, row.probabilities = TOO_FEW_FRAMES, None, {}
            elif too_alike(track["labels"]):
                row.note = NOT_CENTRED
                self.uncentred[track["id"]] = [track["count"], expressions_shown(track["labels"])]
        return rows

    def warning(self, source):
        """One line naming the tracks whose faces were left uncentred, or None."""
        from efr.predict.centring import uncentred_line

        if not self.uncentred:
            return None
        names = {f"{source} track {i}": value for i, value in self.uncentred.items()}
        return uncentred_line("face track(s)", {n: v[1] for n, v in names.items()},
                              {n: v[0] for n, v in names.items()}, self.predictor.class_names)
