"""Videos and the camera: frames read, written annotated, shown in a window."""

import contextlib
import logging
import os
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from efr.io.errors import EFRError
from efr.io.imageio import atomic_path
from efr.io.parallel import bounded_map
from efr.predict.sources import ANNOTATED_DIR
from efr.predict.tracks import TrackCentring
from efr.predict.writers import annotate

log = logging.getLogger("efr.predict")

VIDEO_FOURCC = "mp4v"

GUI_HELP = (
    'install the desktop OpenCV build: pip uninstall -y opencv-python-headless && pip install "opencv-python<5"'
)


class _NoFrames(Exception):
    """A video that opened but gave no frame (internal signal)."""


def check_gui():
    """Raise EFRError unless cv2.imshow can open a window here."""
    info = cv2.getBuildInformation()
    gui = ""
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() in ("", "NONE"):
        raise EFRError(f"--show needs an OpenCV build with windows, but this one is headless: {GUI_HELP}")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise EFRError("--show needs a display, and none is set (DISPLAY): run it on a desktop session, "
                       "or drop --show and use --out DIR for an annotated video")


class StreamRunner:
    """Runner's videos and the camera (a base of Runner): frames read, classified, written as an annotated\n    video, shown in a window."""

    @property
    def window(self):
        """Photos in flight: a whole batch ahead, so that reading and detection go on while the model runs."""
        return 4 * self.workers + 2 * self.predictor.batch_size

    def run_video(self, item, every=1, max_frames=None):
        capture = cv2.VideoCapture(str(item.path))
        if not capture.isOpened():
            capture.release()
            reason = f"{item.path}: OpenCV cannot open this video (damaged, or a codec it lacks)"
            self.result.skipped.append((str(item.path), reason))
            log.warning("skipped %s", reason)
            return
        out_path = None if self.out_dir is None else self.out_dir / ANNOTATED_DIR / item.rel
        self._run_stream(capture, str(item.path), out_path, every, max_frames, live=False)

    def run_camera(self, index, every=1, max_frames=None):
        capture = cv2.VideoCapture(int(index))
        if not capture.isOpened():
            capture.release()
            raise EFRError(f"camera {index} could not be opened: check that it is connected and not in use, "
                           "or try another index (--camera 1)")
        out_path = None if self.out_dir is None else self.out_dir / ANNOTATED_DIR / f"camera{index}_annotated.mp4"
        self._run_stream(capture, f"camera:{index}", out_path, every, max_frames, live=True)

    def _frames(self, capture, source, every, max_frames):
        index = 0
        while (max_frames is None or index < max_frames) and not self.stopped:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield index, frame, index % every == 0, source
            index += 1

    def _run_stream(self, capture, source, out_path, every, max_frames, live):
        try:
            with contextlib.ExitStack() as stack:
                # keep_suffix: VideoWriter picks the container from the extension
                tmp = stack.enter_context(atomic_path(out_path, keep_suffix=True)) if out_path is not None else None
                frames_read = self._stream(capture, source, tmp, every, max_frames, live)
                if frames_read == 0:
                    raise _NoFrames()  # leaves no empty video behind
        except _NoFrames:
            reason = f"{source}: no frame could be read"
            self.result.skipped.append((source, reason))
            log.warning("skipped %s", reason)
            return
        finally:
            capture.release()
        self.result.videos += 1
        if out_path is not None:
            self.result.outputs.append(out_path)

    def _stream(self, capture, source, tmp, every, max_frames, live):
        """Analyse frames, draw them into ``tmp`` (a video) and/or a window; return frames read."""
        every = max(1, int(every))
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        fps = fps if 1.0 <= fps <= 240.0 else 25.0
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if max_frames:
            total = min(total, max_frames) if total > 0 else max_frames
        bar = tqdm(total=total if total > 0 else None, desc=f"frames of {Path(source).name}", unit="frame",
                   disable=not self.progress, leave=False)
        writer, last_rows, frames_read = None, [], 0
        self.tracks = TrackCentring(self.predictor) if self.predictor.subject_norm else None
        # Frames are read in order in this thread; the pool overlaps detection of the
        # next frames with classification of the current batch.  A camera is classified
        # frame by frame so that the window and the rows keep up with it.
        frames = self._frames(capture, source, every, max_frames)
        found_items = bounded_map(self._find_in_frame, frames, self.workers, 1 if live else 2 * self.workers + 2)
        stream = self._one_by_one(found_items) if live else self._classified(found_items)
        try:
            for found, rows in stream:
                frames_read += 1
                bar.update()
                if found.analysed:
                    self.result.frames += 1
                    self.result.rows.extend(rows)
                    last_rows = [r for r in rows if r.box is not None]
                if tmp is None and not self.show:
                    continue
                # Frames between --every steps show the latest analysed boxes.
                drawn = annotate(found.image, last_rows)
                if tmp is not None:
                    if writer is None:
                        height, width = drawn.shape[:2]
                        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps,
                                                 (width, height))
                        if not writer.isOpened():
                            raise EFRError(f"OpenCV cannot write an {VIDEO_FOURCC} video to {tmp.parent}")
                    writer.write(drawn)
                if self.show:
                    self._show(source, drawn)
        except KeyboardInterrupt:
            if not live:
                raise
            log.info("%s: stopped (Ctrl-C); keeping the %d frames analysed", source, self.result.frames)
        finally:
            stream.close()
            if writer is not None:
                writer.release()
            bar.close()
        if self.tracks is not None and self.tracks.warning(source):
            log.warning("%s", self.tracks.warning(source))
        return frames_read

    def _one_by_one(self, found_items):
        for found in found_items:
            yield from self._flush([found])

    def _show(self, source, image):
        cv2.imshow(f"EFR - {source} (q to stop)", image)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stopped = True
