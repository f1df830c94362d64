"""What a crop run reports: counts by status, split and emotion, the reasons photos were skipped, the
manifest rows."""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from efr.crop.workers import UNALIGNED_REASON
from efr.faces import landmarks
from efr.io.emotions import EMOTIONS
from efr.io.errors import EFRError
from efr.io.manifest import MANIFEST_NAME, SPLITS

STATUSES = ("ok", "no_face", "unreadable", "filtered", "unknown_label")

SUMMARY_NAME = "crop_summary.json"


# ---------------------------------------------------------------------------------------
# The summary


@dataclass
class CropSummary:
    """What a crop run did: counts per status, images per split x emotion, what was left out and why."""

    src: str
    dst: str
    layout: str
    counts: dict = field(default_factory=dict)  # status -> photos
    table: dict = field(default_factory=dict)  # split -> emotion -> crops written or reused
    subjects: dict = field(default_factory=dict)  # split -> number of subjects with crops
    written: int = 0
    reused: int = 0
    centre_crops: int = 0
    several_faces: int = 0
    align: str = "none"
    unaligned: list = field(default_factory=list)  # --align eyes: crops whose landmarks were not found
    ignored_files: int = 0
    ignored_examples: list = field(default_factory=list)
    mapped_folders: dict = field(default_factory=dict)  # folder name -> canonical emotion
    unknown_labels: dict = field(default_factory=dict)  # reason -> photos
    no_face: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)  # [source, reason]
    split_by_image: bool = False
    warnings: list = field(default_factory=list)

    @property
    def usable(self):
        return self.counts.get("ok", 0)

    def format(self):
        """The summary as text for the terminal."""
        lines = [f"crop: {self.src} -> {self.dst} (layout: {self.layout})"]
        lines.append(
            "photos: " + ", ".join(f"{self.counts.get(s, 0)} {s}" for s in STATUSES)
            + f"; {self.ignored_files} non-image file(s) ignored"
        )
        lines.append(f"crops: {self.written} written, {self.reused} already done; {self.centre_crops} centre crops")
        if self.align == "eyes":
            lines.append(f"eye-levelled: {self.usable - len(self.unaligned)} of {self.usable} crops "
                         f"({len(self.unaligned)} without landmarks kept unaligned; landmarks in "
                         f"{landmarks.LANDMARKS_NAME})")
        emotions = [e for e in EMOTIONS if any(self.table.get(s, {}).get(e) for s in SPLITS)]
        if emotions:
            unit = "images (split by image)" if self.split_by_image else "subjects"
            width = max(len(e) for e in emotions + ["emotion", unit])
            lines.append("")
            lines.append(f"{'emotion':<{width}} " + " ".join(f"{s:>6}" for s in (*SPLITS, "total")))
            for emotion in emotions:
                cells = [self.table.get(s, {}).get(emotion, 0) for s in SPLITS]
                lines.append(f"{emotion:<{width}} " + " ".join(f"{c:>6}" for c in (*cells, sum(cells))))
            totals = [sum(self.table.get(s, {}).values()) for s in SPLITS]
            lines.append(f"{'total':<{width}} " + " ".join(f"{c:>6}" for c in (*totals, sum(totals))))
            lines.append(f"{unit:<{width}} " + " ".join(f"{self.subjects.get(s, 0):>6}" for s in SPLITS))
        if self.mapped_folders:
            lines.append("")
            lines.append("folders mapped: " + ", ".join(f"{k} -> {v}" for k, v in sorted(self.mapped_folders.items())))
        for title, items in (
            ("no face found", self.no_face),
            ("no landmarks found (unaligned crop)", self.unaligned),
            ("unreadable", [f"{s}: {r}" for s, r in self.unreadable]),
            ("unknown labels", [f"{n} x {r}" for r, n in sorted(self.unknown_labels.items())]),
            ("non-image files ignored (e.g.)", self.ignored_examples),
        ):
            if items:
                lines.append(f"{title}:")
                lines.extend(f"  {item}" for item in items[:10])
                if len(items) > 10:
                    lines.append(f"  ... {len(items) - 10} more (see {MANIFEST_NAME})")
        for warning in self.warnings:
            lines.append(f"WARNING: {warning}")
        return "\n".join(lines)

    def raise_if_unusable(self):
        """Raise EFRError when the run produced no crop at all."""
        if not self.usable:
            raise EFRError(
                f"no face crops came out of {self.src}: "
                + ", ".join(f"{self.counts.get(s, 0)} {s}" for s in STATUSES if self.counts.get(s))
                + f"; see {Path(self.dst) / MANIFEST_NAME} for the reason per photo"
                + ("; try --on-miss center if the photos are already face crops" if self.counts.get("no_face") else "")
            )


def make_summary(src, dst, layout, rows, ignored, mapped, written, reused, by_image, warnings):
    summary = CropSummary(src=str(src), dst=str(dst), layout=layout, written=written, reused=reused)
    summary.counts = dict(Counter(r["status"] for r in rows if r.get("kind", "original") == "original"))
    table = defaultdict(Counter)
    subjects = defaultdict(set)
    for row in rows:
        if row.get("kind", "original") != "original":
            continue
        if row["status"] == "ok":
            table[row["split"]][row["emotion"]] += 1
            subjects[row["split"]].add(row["source"] if by_image else row["subject"])
            summary.centre_crops += row["reason"].startswith("no face found")
            summary.several_faces += "faces found" in row["reason"]
            if UNALIGNED_REASON in row["reason"]:
                summary.unaligned.append(row["source"])
        elif row["status"] == "no_face":
            summary.no_face.append(row["source"])
        elif row["status"] == "unreadable":
            summary.unreadable.append([row["source"], row["reason"]])
    summary.table = {s: dict(table[s]) for s in SPLITS if s in table}
    summary.subjects = {s: len(subjects[s]) for s in SPLITS if s in subjects}
    reasons = Counter(_short_reason(r) for r in rows if r["status"] == "unknown_label")
    summary.unknown_labels = dict(reasons)
    summary.ignored_files = len(ignored)
    summary.ignored_examples = [str(p) for p in ignored[:10]]
    summary.mapped_folders = dict(mapped)
    summary.split_by_image = by_image
    summary.warnings = list(warnings)
    for split in SPLITS:
        if not summary.table.get(split) and written + reused:
            summary.warnings.append(f"{split} has no crops (no face found for its subjects?)")
    return summary


def _short_reason(row):
    # Group unknown labels by what was wrong, without the per-file name.
    reason = row["reason"]
    return reason.split(": ", 1)[1] if reason.startswith("'") and ": " in reason else reason


# ---------------------------------------------------------------------------------------
# The stage


def _manifest_rows(rows):
    return sorted(rows, key=lambda r: (r.get("kind", "original") != "original", r["source"], r.get("output", "")))


def _clean(row):
    return {k: v for k, v in row.items() if k != "folder"}
