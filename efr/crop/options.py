"""What a crop run is asked to do: its options, parsed and checked before any work."""

import re
from dataclasses import dataclass
from pathlib import Path

from efr.faces import detect as faces, landmarks
from efr.faces.align import ALIGN_MODES
from efr.io.errors import EFRError
from efr.io.rafd import ANGLES, FRONTAL_ANGLE, GAZES
from efr.data.split import DEFAULT_FRACTIONS

LAYOUTS = ("auto", "rafd", "folders")

ON_MISS = ("skip", "center", "fail")

MAX_SIZE = 4096  # the largest crop side: --size 100000 would ask for a 30 GB image


@dataclass(frozen=True)
class CropOptions:
    """Everything that decides what the dataset contains (stored in crop_settings.json)."""

    layout: str = "auto"
    subject_regex: str | None = None
    angles: tuple | None = (FRONTAL_ANGLE,)  # None keeps every camera angle
    gazes: tuple | None = ("frontal",)  # None keeps every gaze
    cascade: str = faces.DEFAULT_CASCADE
    margin: float = faces.DEFAULT_MARGIN
    size: int = faces.DEFAULT_IMAGE_SIZE
    fractions: tuple = DEFAULT_FRACTIONS
    seed: int = 0
    folds: int = 0
    on_miss: str = "skip"
    # Posed data sets (RaFD, KDEF, JAFFE, CK+) show one face filling 40-50% of the
    # frame's shorter side, so the cascade needs neither full resolution nor small
    # windows: a 256 px copy and faces >= 20% of the shorter side find the faces the
    # original full-frame search finds in RaFD, JAFFE and synthetic frames, several
    # times faster (bench/bench_crop.py); a photo with no face there gets a second
    # look at 512 px.
    detect_max_side: int = faces.DETECT_MAX_SIDE
    retry_max_side: int = faces.RETRY_MAX_SIDE
    scale_factor: float = faces.DEFAULT_SCALE_FACTOR
    min_neighbors: int = faces.DEFAULT_MIN_NEIGHBORS
    min_face: float = faces.DEFAULT_MIN_FACE
    # "eyes": the face mesh (efr.faces.landmarks) finds the eyes in the Haar box and the crop is
    # turned so that they are level, with the Haar crops' framing (efr.faces.align).
    align: str = "none"

    def detect_kwargs(self):
        """The keyword arguments of ``efr.faces.detect.find_faces`` these options give."""
        return {"max_side": self.detect_max_side, "retry_max_side": self.retry_max_side,
                "scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors, "min_size": self.min_face}


# ---------------------------------------------------------------------------------------
# Options and folders


def parse_choice_list(value, choices, option):
    """'090' / '045,090' / 'all' -> tuple of choices, or None for all."""
    if value is None or str(value).strip().lower() == "all":
        return None
    items = [v.strip() for v in str(value).replace(" ", ",").split(",") if v.strip()]
    if option == "--gaze":
        items = [v.lower() for v in items]
    bad = [v for v in items if v not in choices]
    if bad or not items:
        raise EFRError(f"{option} {value}: expected 'all' or one or more of {', '.join(choices)} (comma-separated)")
    return tuple(sorted(set(items), key=choices.index))


def parse_angles(value):
    return parse_choice_list(value, ANGLES, "--angle")


def parse_gazes(value):
    return parse_choice_list(value, GAZES, "--gaze")


def check_options(options):
    """Raise EFRError for option values that cannot work, before any file is touched."""
    if options.layout not in LAYOUTS:
        raise EFRError(f"--layout {options.layout}: expected one of {', '.join(LAYOUTS)}")
    if options.on_miss not in ON_MISS:
        raise EFRError(f"--on-miss {options.on_miss}: expected one of {', '.join(ON_MISS)}")
    if not 8 <= options.size <= MAX_SIZE:
        raise EFRError(f"--size {options.size}: the crop side must be 8 to {MAX_SIZE} pixels "
                       "(every crop is held in memory at this side)")
    if not 0 <= int(options.seed) < 2**32:
        raise EFRError(f"--seed {options.seed}: use a whole number from 0 to {2**32 - 1}")
    if not 0.0 <= options.margin <= 2.0:
        raise EFRError(f"--margin {options.margin}: expected a fraction of the face side between 0 and 2 (e.g. 0.1)")
    if options.folds < 0 or options.folds == 1:
        raise EFRError(f"--folds {options.folds}: use 0 (no folds) or 2 or more")
    if options.min_neighbors < 0:
        raise EFRError(f"--min-neighbors {options.min_neighbors}: expected 0 or more")
    if not 0.0 <= options.min_face <= 1.0:
        raise EFRError(f"--min-face {options.min_face}: expected a fraction of the photo's shorter side, 0 to 1")
    if options.subject_regex is not None:
        compile_subject_regex(options.subject_regex)
    faces.load_cascade(options.cascade)  # a file that is not a cascade is refused here, not by every worker
    if options.align not in ALIGN_MODES:
        raise EFRError(f"--align {options.align}: expected one of {', '.join(ALIGN_MODES)}")
    if options.align == "eyes":
        landmarks.mesh_model_path()  # the model file must be there before any photo is read


def compile_subject_regex(pattern):
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise EFRError(f"--subject-regex {pattern!r} is not a valid regular expression: {err}") from err
    if regex.groups < 1:
        raise EFRError(
            f"--subject-regex {pattern!r} has no group: put the subject id in parentheses, "
            r"e.g. '^([A-Z]{2})\.' for JAFFE's KA.AN1.39.tiff"
        )
    return regex


def check_folders(src, dst):
    """Resolve --src and --dst; refuse a missing source and any nesting of the two."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.exists():
        raise EFRError(f"source folder {src} does not exist: give --src the folder that holds the photos")
    if not src.is_dir():
        raise EFRError(f"--src {src} is a file, not a folder: give the folder that holds the photos")
    src_abs, dst_abs = src.resolve(), dst.resolve()
    if dst_abs == src_abs or dst_abs.is_relative_to(src_abs):
        raise EFRError(
            f"output folder {dst} is inside the source folder {src}: crop.py never writes under --src; "
            "choose a --dst outside it (e.g. a sibling folder named Dataset)"
        )
    if src_abs.is_relative_to(dst_abs):
        raise EFRError(
            f"source folder {src} is inside the output folder {dst}: choose a --dst that does not contain the photos"
        )
    if dst.exists() and not dst.is_dir():
        raise EFRError(f"--dst {dst} is a file: give a folder (it is created if missing)")
    return src_abs, dst_abs
