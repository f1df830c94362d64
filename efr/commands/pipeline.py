"""`efr pipeline`: raw photos to report in one command.

    efr pipeline --src PHOTOS --out PROJECT                      # crop -> augment -> train -> report
    efr pipeline --src PHOTOS --out PROJECT --folds 5            # ... with subject-disjoint 5-fold CV
    efr pipeline --src jaffe --out P --subject-regex '^([A-Z]{2})\\.' --img-size 96 --epochs 40

Everything goes into PROJECT: Dataset/ (crop, augment), runs/<name>/ (train, report.html)
and pipeline.json (what was run with which settings).  Running it again skips what is
already complete with the same settings: crop reuses every crop it made, augment every
copy, and a training run with the same settings on the same Dataset (manifest) is not
repeated.  Every option of crop, augment and train is accepted (an option two stages
share, such as --seed, --workers or --folds, goes to both).  Reference: docs/pipeline.md.
"""

import argparse
import contextlib
import copy
import hashlib
import io
import json
import logging
from dataclasses import asdict
from pathlib import Path

from efr.commands.cli import setup_logging
from efr.commands import entry_points
from efr.io.errors import EFRError
from efr.io.writable import check_writable
from efr.io.runinfo import write_json

log = logging.getLogger("efr.pipeline")

SUMMARY = "raw photos -> crop -> augment -> train (or K-fold CV) -> report, in one project folder"
PARSER_KWARGS = {"description": __doc__.replace("`efr pipeline`: ", ""),
                 "formatter_class": argparse.RawDescriptionHelpFormatter}
STAGES = ("crop", "augment", "train")
# Options the pipeline sets itself: where each stage reads and writes.
PIPELINE_SET = {
    "crop": {"--dst", "--overwrite"},  # the project's Dataset is the pipeline's own: settings changed = redo
    "augment": {"--dataset", "--clean"},
    "train": {"--dataset", "--runs-dir", "--name", "--exist-ok", "--resume"},
}
STATE_NAME = "pipeline.json"
DATASET_DIR = "Dataset"
RUNS_DIR = "runs"
# Train settings that say where a run goes, not what it computes.
_PLACE_SETTINGS = ("dataset", "runs_dir", "name", "exist_ok")


def stage_parser(verb):
    """The stage's own parser, built by its own add_arguments (so new options arrive here too)."""
    from efr.commands import command_module

    module = command_module(verb)
    return module.add_arguments(argparse.ArgumentParser(prog=f"efr {verb}", add_help=False, **{
        k: v for k, v in module.PARSER_KWARGS.items() if k != "formatter_class"}))


def stage_actions(verb):
    """The optional arguments of a stage that the pipeline passes through.

    argparse has no public way to list or copy a parser's arguments; ``_actions`` (and
    ``_add_action`` below) have been stable since Python 3.2 and are what ``parents=``
    uses internally.
    """
    return [a for a in stage_parser(verb)._actions
            if a.option_strings and not set(a.option_strings) & PIPELINE_SET[verb]]


def _with_default(action):
    shown = action.default not in (None, False, argparse.SUPPRESS) and "default" not in (action.help or "")
    return f"{action.help} (default {action.default})" if shown else (action.help or "")


def add_arguments(parser):
    """The pipeline's own options, then every crop, augment and train option (from their parsers)."""
    parser.add_argument("--out", required=True, metavar="PROJECT",
                        help="project folder: Dataset/, runs/<name>/ and pipeline.json go here")
    parser.add_argument("--no-augment", action="store_true",
                        help="skip data_aug (and remove augmented copies an earlier run made)")
    seen = {}
    for verb in STAGES:
        group = parser.add_argument_group(f"{verb} options (see efr {verb} --help)")
        for action in stage_actions(verb):
            key = action.option_strings[-1]
            if key in seen:  # shared by two stages (--seed, --workers, --folds, --quiet): one option for both
                first, helps = seen[key]
                helps.append((verb, _with_default(action)))
                first.help = shared_help(helps)
                continue
            copied = copy.copy(action)
            copied.default = argparse.SUPPRESS  # only options given on the command line override a stage's defaults
            copied.help = _with_default(action)
            group._add_action(copied)
            seen[key] = (copied, [(verb, copied.help)])
    if "--size" in seen:
        seen["--size"][0].help += "; the pipeline crops at --img-size when that is given and --size is not"
    return parser


def shared_help(helps):
    """One help text for an option several stages share: said once when they say the same, else each stage's."""
    texts = {text for _, text in helps}
    verbs = ", ".join(verb for verb, _ in helps)
    if len(texts) == 1:
        return f"{texts.pop()} ({verbs})"
    return "; ".join(f"{verb}: {text}" for verb, text in helps)


build_parser, parse_args, main = entry_points(__name__)


# ----------------------------------------------------------------------------------
# Each stage's arguments: its own defaults, the pipeline's places, the user's options


def stage_namespace(verb, args, fixed):
    """The stage's parsed arguments: its parser on ``fixed`` argv, then every option the user gave."""
    from efr.commands import command_module

    parser = command_module(verb).build_parser(prog=f"efr {verb}")
    namespace = parser.parse_args([str(a) for a in fixed])
    given = vars(args)
    for action in stage_actions(verb):
        if action.dest in given:
            setattr(namespace, action.dest, given[action.dest])
    return namespace


def plan(args):
    """(crop, augment, train) namespaces for a project; checks every setting before any work."""
    from efr.commands import crop, train
    from efr.crop.destination import settings_changed
    from efr.train.settings import validate_settings

    project = check_writable(args.out)
    dataset = project / DATASET_DIR
    crop_args = stage_namespace("crop", args, ["--src", args.src, "--dst", dataset])
    if "size" not in vars(args) and vars(args).get("img_size"):
        crop_args.size = args.img_size  # crops at the model's input size unless --size says otherwise
    # The project's Dataset is the pipeline's own: made with other settings, it is made again.
    crop_args.overwrite = settings_changed(args.src, dataset, crop.options_from_args(crop_args))
    augment_args = stage_namespace("augment", args, ["--dataset", dataset])
    if augment_args.copies is not None and augment_args.copies < 1:
        raise EFRError(f"--copies {augment_args.copies}: use 1 or more, or --no-augment")
    train_args = stage_namespace("train", args, ["--dataset", dataset, "--runs-dir", project / RUNS_DIR])
    settings = train.settings_from_args(train_args)
    validate_settings(settings)
    check_subjects_known(args.src, crop_args, settings)
    return crop_args, augment_args, train_args


def check_subjects_known(src, crop_args, settings):
    """--folds and --subject-norm need each photo's person; on a folder layout only --subject-regex says who.

    Refused here, before crop and augment run, rather than by train after them.
    """
    from efr.crop.sources import detect_layout, scan_source

    needs = [option for option, used in (("--folds", settings.folds), ("--subject-norm", settings.subject_norm))
             if used]
    if not needs or crop_args.subject_regex:
        return
    layout = crop_args.layout
    if layout == "auto":
        images, _ = scan_source(Path(src))
        layout = detect_layout([p.relative_to(Path(src)).as_posix() for p in images])
    if layout == "folders":
        raise EFRError(f"{' and '.join(needs)} {'need' if len(needs) > 1 else 'needs'} the person in each photo, "
                       "and photos in <Emotion>/ folders "
                       r"do not say who they are: give --subject-regex (e.g. '^([A-Z]{2})\.' for JAFFE's "
                       "KA.AN1.39.tiff), or leave out " + " and ".join(needs))


# ----------------------------------------------------------------------------------
# State: what ran with which settings


def read_state(project):
    path = Path(project) / STATE_NAME
    if not path.is_file():
        return {"runs": []}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise EFRError(f"{path}: unreadable ({err}); delete it (runs are kept) and run again") from err


def dataset_digest(dataset):
    """sha256 of what a training run sees of the Dataset: the crop settings, the manifest rows and every file's bytes.

    The manifest rows (file, subject, split, fold, transform ...) change with what was
    cropped and augmented, but not with how: --align, --size or --margin crop the same
    photos into the same rows.  The crop settings and the files' content do change, so a
    Dataset cropped again with other settings never reuses a run made from the old crops.
    The order rows were saved in does not count.
    """
    from efr.crop.destination import read_settings
    from efr.io.manifest import read_manifest

    dataset = Path(dataset)
    rows = read_manifest(dataset)
    if not rows:
        return ""
    digest = hashlib.sha256(json.dumps(read_settings(dataset), sort_keys=True, default=str).encode("utf-8"))
    for row in sorted(rows, key=lambda r: json.dumps(r, sort_keys=True)):
        digest.update(json.dumps(row, sort_keys=True).encode("utf-8"))
        path = dataset / row["output"] if row["output"] else None
        if path is not None and path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# Settings --model fusion does not use (its head is fitted on all rows at once over a grid of C values,
# not by Keras epochs): left out of its fingerprint, so changing them neither retrains it nor makes a
# second folder with the same result.  Other models do not use the fusion settings.
FUSION_UNUSED = ("epochs", "batch_size", "lr", "patience", "fine_tune_lr", "fine_tune_epochs", "cache", "distribute",
                 "cpu_devices", "tensorboard")
FUSION_ONLY = ("backbone", "fusion_parts", "subject_norm")


def train_fingerprint(train_args):
    """What decides a training run's result, as plain JSON: the settings the model uses, no others."""
    from efr.commands.train import settings_from_args
    from efr.train.settings import is_fusion

    built = settings_from_args(train_args)
    settings = asdict(built)
    unused = FUSION_UNUSED if is_fusion(built) else FUSION_ONLY
    for key in _PLACE_SETTINGS + ("quiet",) + unused:
        settings.pop(key, None)
    return json.loads(json.dumps(settings, default=str))


def run_name(fingerprint, digest):
    """<model>[-cv<K>]-<8 hex digits of the settings and data>: one folder per training setting and data.

    The same settings on the same data always name the same folder, so a run that was
    interrupted is resumed in its own folder (efr train's same-name resume) rather than
    started again beside it.
    """
    key = hashlib.sha256(json.dumps([fingerprint, digest], sort_keys=True).encode("utf-8")).hexdigest()[:8]
    folds = int(fingerprint.get("folds") or 0)
    return f"{fingerprint['model']}{f'-cv{folds}' if folds else ''}-{key}"


def is_complete(run_dir):
    """A training run that finished: metrics.json and report.html are written last."""
    return (Path(run_dir) / "metrics.json").is_file() and (Path(run_dir) / "report.html").is_file()


def record_run(project, run_dir, fingerprint, digest, args):
    state = read_state(project)
    state["src"] = str(args.src)
    runs = [r for r in state.get("runs", []) if r.get("run") != Path(run_dir).name]
    state["runs"] = runs + [{"run": Path(run_dir).name, "settings": fingerprint, "data_sha256": digest}]
    write_json(Path(project) / STATE_NAME, state)


# ----------------------------------------------------------------------------------
# The stages


def banner(number, title):
    print(f"\n=== [{number}/3] {title} ===", flush=True)


def run_crop(crop_args):
    from efr.commands import crop

    summary = crop.run_args(crop_args)
    if crop_args.overwrite:
        print(f"crop: {crop_args.dst} was made with other settings: cropped again")
    elif summary.written == 0:
        print(f"crop: already complete with the same settings ({summary.reused} crops reused, none redone)")
    return summary


def run_augment(augment_args, enabled):
    """Augment (cleaning first when an earlier augmentation used other settings); None when disabled."""
    from efr.data import augment as recipes
    from efr.data.augmented import AUGMENTABLE_SPLITS, RUN_INFO_NAME, clean_augmented, normalise_splits
    from efr.commands import augment

    dataset = Path(augment_args.dataset)
    info_path = dataset / RUN_INFO_NAME
    previous = json.loads(info_path.read_text(encoding="utf-8")).get("settings", {}) if info_path.is_file() else {}
    wanted = {"recipe": augment_args.recipe, "copies": augment.copies_of(augment_args), "seed": augment_args.seed,
              "splits": normalise_splits(augment_args.splits or AUGMENTABLE_SPLITS)}
    # More copies are added to the ones there (augment keeps them); anything else starts again.
    changed = previous and any(
        previous.get(k) != v for k, v in wanted.items() if k != "copies"
    ) or (augment_args.recipe == recipes.DEFAULT_RECIPE and wanted["copies"] < previous.get("copies", 0))
    if not enabled or changed:
        result = clean_augmented(dataset)
        if result.removed:
            why = "--no-augment" if not enabled else "made with other settings"
            print(f"augment: removed {result.removed} augmented file(s) ({why})")
        if info_path.is_file():
            info_path.unlink()
        if not enabled:
            print("augment: skipped (--no-augment)")
            return None
    result = augment.run_args(augment_args)
    if result.written == 0:
        print(f"augment: already complete with the same settings ({result.already_done} copies reused, none redone)")
    return result


def run_train(project, train_args, args):
    """Train unless a complete run with the same settings on the same data exists; return (run folder, metrics)."""
    from efr.io import runstate
    from efr.commands import train

    fingerprint = train_fingerprint(train_args)
    digest = dataset_digest(Path(train_args.dataset))
    named = argparse.Namespace(**vars(train_args))
    named.name = run_name(fingerprint, digest)
    run_dir = Path(named.runs_dir) / named.name
    if is_complete(run_dir):
        print(f"train: already complete with the same settings on the same data: {run_dir} (not retrained)")
        return run_dir, json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    if run_dir.exists() and any(run_dir.iterdir()):
        # An unfinished run of these settings: efr train resumes it after its last completed epoch (same
        # --name, same settings); a folder without a run state (cut off before its first epoch) starts again.
        resumable = runstate.effective_state(runstate.read_state(run_dir)) is not None
        named.exist_ok = not resumable
        print(f"train: {run_dir} did not finish: {'resuming it' if resumable else 'training again'}")
    result = train.run_args(named)
    record_run(project, result.run_dir, fingerprint, digest, args)
    return result.run_dir, result.metrics


def run_args(args):
    setup_logging(vars(args).get("quiet", False), vars(args).get("verbose", False))
    from efr.commands.train import accuracy_line, transductive_line

    crop_args, augment_args, train_args = plan(args)
    project = Path(args.out)
    project.mkdir(parents=True, exist_ok=True)
    quiet = vars(args).get("quiet", False)
    # --quiet: the stages' banners and tables are not shown (warnings and errors still are), only the result.
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        run_dir, metrics, model_dir = run_stages(project, args, crop_args, augment_args, train_args)
    print(("" if quiet else "\n") + "=== done ===")
    print(f"model: {model_dir / 'best.keras'}")
    print(accuracy_line(metrics))
    transductive = transductive_line(metrics)
    if transductive:
        print(transductive)
    print(f"report: {run_dir / 'report.html'}")
    return run_dir


def run_stages(project, args, crop_args, augment_args, train_args):
    """Crop, augment, train; (run folder of the result, its metrics, folder of the model to keep)."""
    banner(1, f"crop: faces from {args.src} into {crop_args.dst}")
    run_crop(crop_args)
    banner(2, "augment: copies of the Train/Valid faces (Test untouched)")
    run_augment(augment_args, enabled=not args.no_augment)
    if train_args.folds:
        banner(3, f"train: {train_args.folds}-fold cross-validation (the estimate), then the model to keep")
        run_dir, metrics = run_train(project, train_args, args)
        # Fold models are not kept: the model to use (predict, evaluate) is trained on Train, stopped on Valid.
        model_dir, _ = run_train(project, final_model_args(train_args), args)
    else:
        banner(3, "train: on Train, stopped on Valid, tested on Test; report")
        run_dir, metrics = run_train(project, train_args, args)
        model_dir = run_dir
    return run_dir, metrics, model_dir


def final_model_args(train_args):
    """The training arguments of the model to keep after cross-validation: the same, on the Train/Valid/Test split."""
    final = argparse.Namespace(**vars(train_args))
    final.folds = 0
    return final
