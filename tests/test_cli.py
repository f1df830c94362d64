"""The `efr` command: one verb per stage, with exactly its script's options, installable with pip."""

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import efr
from efr import commands
from efr.commands import pipeline

REPO = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{Path(name).stem}", REPO / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def options(parser):
    """{option string: (dest, default, nargs, choices, required)} of a parser."""
    return {s: (a.dest, a.default, a.nargs, a.choices, a.required) for a in parser._actions for s in a.option_strings}


def subparser(verb):
    parser = commands.build_parser()
    return parser._subparsers._group_actions[0].choices[verb]


@pytest.mark.parametrize("verb", [v for v in commands.VERBS if commands.SCRIPTS[v]])
def test_each_verb_has_exactly_its_scripts_options(verb):
    script = load_script(commands.SCRIPTS[verb])
    assert options(subparser(verb)) == options(script.build_parser())
    assert len(options(script.build_parser())) > 3


def test_an_option_added_to_a_stage_reaches_its_script_efr_and_the_pipeline(monkeypatch):
    from efr.commands import crop

    original = crop.add_arguments

    def with_new_option(parser):
        original(parser)
        parser.add_argument("--brand-new", type=int, default=7)
        return parser

    monkeypatch.setattr(crop, "add_arguments", with_new_option)
    assert "--brand-new" in options(load_script("crop.py").build_parser())
    assert "--brand-new" in options(subparser("crop"))
    assert "--brand-new" in options(pipeline.build_parser())
    args = pipeline.parse_args(["--src", "p", "--out", "o", "--brand-new", "3"])
    assert pipeline.stage_namespace("crop", args, ["--src", "p"]).brand_new == 3


def test_pipeline_takes_every_crop_augment_and_train_option():
    offered = set(options(pipeline.build_parser()))
    for verb in pipeline.STAGES:
        wanted = set(options(commands.command_module(verb).build_parser())) - pipeline.PIPELINE_SET[verb]
        assert wanted <= offered, (verb, wanted - offered)
    for name in ("--gaze", "--angle", "--subject-regex", "--img-size", "--epochs", "--weights", "--seed", "--folds",
                 "--model"):
        assert name in offered


def test_pipeline_gives_shared_options_to_every_stage_and_keeps_stage_defaults():
    args = pipeline.parse_args(["--src", "photos", "--out", "P", "--seed", "5", "--folds", "3", "--img-size", "48"])
    crop_ns = pipeline.stage_namespace("crop", args, ["--src", "photos", "--dst", "P/Dataset"])
    train_ns = pipeline.stage_namespace("train", args, ["--dataset", "P/Dataset"])
    augment_ns = pipeline.stage_namespace("augment", args, ["--dataset", "P/Dataset"])
    assert (crop_ns.seed, train_ns.seed, augment_ns.seed) == (5, 5, 5)
    assert crop_ns.folds == train_ns.folds == 3
    assert crop_ns.gaze == "frontal" and train_ns.epochs is None and augment_ns.recipe == "default"


def test_version_and_unknown_verb(capsys):
    with pytest.raises(SystemExit) as stop:
        commands.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"efr {efr.__version__}"
    with pytest.raises(SystemExit) as stop:
        commands.main(["frobnicate"])
    assert stop.value.code == 2


def test_python_m_efr_help_and_error_contract(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    shown = subprocess.run([sys.executable, "-m", "efr", "crop", "--help"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=120)
    assert shown.returncode == 0 and "--subject-regex" in shown.stdout and shown.stdout.startswith("usage: efr crop")
    failed = subprocess.run([sys.executable, "-m", "efr", "crop", "--src", str(tmp_path / "missing")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("error: source folder") and "Traceback" not in failed.stderr


def _package_copy(tmp_path):
    """The files `pip install .` needs, copied so that the build leaves the checkout untouched."""
    source = tmp_path / "src"
    shutil.copytree(REPO / "efr", source / "efr", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    return source


@pytest.mark.slow
def test_pip_install_gives_the_efr_command(tmp_path):
    """pip install . into a fresh venv (dependencies from this interpreter, so no download)."""
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # This interpreter's packages (TensorFlow, pip, setuptools ...) are visible to the new venv, EFR is not.
    shared = [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
    Path(site, "shared_deps.pth").write_text("\n".join(shared or [sysconfig.get_paths()["purelib"]]) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                              "--no-build-isolation", str(_package_copy(tmp_path))],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    efr_bin = venv / "bin" / "efr"
    assert efr_bin.is_file()

    def efr_cmd(*argv):
        return subprocess.run([str(efr_bin), *argv], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300)

    top = efr_cmd("--help")
    assert top.returncode == 0 and all(verb in top.stdout for verb in commands.VERBS)
    crop_help = efr_cmd("crop", "--help")
    assert crop_help.returncode == 0 and "--subject-regex" in crop_help.stdout
    assert efr_cmd("--version").stdout.strip() == f"efr {efr.__version__}"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import efr; print(efr.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    assert where.startswith(str(venv))  # the installed copy, not the checkout
