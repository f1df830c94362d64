"""The error contract of every script: a user mistake gives one 'error:' line, exit status 2 and
no traceback, and argument values are checked before any work (and before TensorFlow starts)."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cluster
import crop
import data_aug
import demo
import efe_cnn
import predict
from efr.commands.cli import EXIT_USER_ERROR, run
from train_fixtures import make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"efe_cnn": efe_cnn, "crop": crop, "data_aug": data_aug, "predict": predict, "cluster": cluster,
           "demo": demo}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    dataset = make_tiny_dataset(root, subjects=4, size=32, gazes=("frontal",), emotions=("Happy", "Sad"),
                                fractions=(0.5, 0.25, 0.25))
    (root / "photos").mkdir()
    (root / "a_file.txt").write_text("not a folder")
    return {"D": str(dataset), "R": str(root), "P": str(root / "photos"), "F": str(root / "a_file.txt"),
            "M": str(root / "missing")}


CASES = [
    ("efe_cnn", "--dataset {D} --epochs 0", "--epochs 0"),
    ("efe_cnn", "--dataset {D} --batch-size 0", "--batch-size 0"),
    ("efe_cnn", "--dataset {D} --lr -1", "--lr -1"),
    ("efe_cnn", "--dataset {D} --patience -1", "--patience -1"),
    ("efe_cnn", "--dataset {D} --folds 1", "--folds 1"),
    ("efe_cnn", "--dataset {D} --cv-valid-fraction 1.5", "--cv-valid-fraction"),
    ("efe_cnn", "--dataset {D} --img-size 5", "--img-size 5"),
    ("efe_cnn", "--dataset {D} --gallery-size -1", "--gallery-size -1"),
    ("efe_cnn", "--dataset {D} --cpu-devices 0", "--cpu-devices 0"),
    ("efe_cnn", "--dataset {D} --model nope", "--model nope"),
    ("efe_cnn", "--dataset {D} --name a/b", "plain folder name"),
    ("efe_cnn", "--dataset {D} --fine-tune-lr 0", "--fine-tune-lr"),
    ("efe_cnn", "--dataset {D} --subject-norm", "--model seed has none"),
    ("efe_cnn", "--dataset {D} --model fusion --fusion-parts nope", "--fusion-parts nope"),  # issue 23.10
    ("efe_cnn", "--dataset {D} --model fusion --backbone nope", "--backbone nope"),
    ("efe_cnn", "--dataset {D} --model fusion --weights {M}", "no such file"),  # issue 23.14: not silently ignored
    ("efe_cnn", "--dataset {M}", "not found"),
    ("efe_cnn", "--resume {M}", "no such run folder"),
    ("crop", "--src {P} --dst {R}/o --size 4", "--size 4"),
    ("crop", "--src {P} --dst {R}/o --margin 5", "--margin 5"),
    ("crop", "--src {P} --dst {R}/o --folds 1", "--folds 1"),
    ("crop", "--src {P} --dst {R}/o --split 50 50 50", "sums to 150"),
    ("crop", "--src {P} --dst {R}/o --workers 0", "--workers 0"),
    ("crop", "--src {P} --dst {R}/o --min-face 2", "--min-face 2"),
    ("crop", "--src {P} --dst {R}/o --min-neighbors -1", "--min-neighbors -1"),
    ("crop", "--src {P} --dst {R}/o --subject-regex (", "not a valid regular expression"),
    ("crop", "--src {P} --dst {R}/o --angle 999", "--angle 999"),
    ("crop", "--src {P} --dst {R}/o --gaze up", "--gaze up"),
    ("crop", "--src {M} --dst {R}/o", "does not exist"),
    ("crop", "--src {P} --dst {R}/o --size 100000", "--size 100000"),  # issue 23.12: not a 30 GB allocation
    ("crop", "--src {P} --dst {R}/o --cascade {F}", "not a valid Haar cascade"),
    ("data_aug", "--dataset {D} --copies 0", "--copies"),
    ("data_aug", "--dataset {D} --splits Test", "Test is never augmented"),
    ("data_aug", "--dataset {D} --workers 0", "--workers 0"),
    ("data_aug", "--dataset {M}", "no such Dataset folder"),
    ("predict", "--model {M} {P} --every 0", "--every 0"),
    ("predict", "--model {M} {P} --batch-size 0", "--batch-size 0"),
    ("predict", "--model {M} {P} --max-frames 0", "--max-frames 0"),
    ("predict", "--model {M} {P} --max-faces 0", "--max-faces 0"),
    ("predict", "--model {M} {P} --workers 0", "--workers 0"),
    ("predict", "--model {M} {P} --margin 9", "--margin 9"),
    ("predict", "--model {M} {P} --table-rows -1", "--table-rows -1"),
    ("predict", "--model {M} --camera -1", "--camera -1"),
    ("predict", "--model {M} {M}", "does not exist"),
    ("predict", "--model {M} {P}", "no photos or videos found"),
    ("cluster", "--dataset {D} --features hog --out {R}/c --pca -5", "--pca -5"),
    ("cluster", "--dataset {D} --features hog --out {R}/c --methods kmeans,dbscan", "unknown dbscan"),
    ("cluster", "--dataset {D} --features hog --out {R}/c --split Nope", "--split 'Nope'"),
    ("cluster", "--dataset {D} --features hog --out {F}", "is a file"),
    ("cluster", "--dataset {D} --out {R}/c", "needs --model"),
    ("cluster", "--dataset {D} --features hog --out {D}/Test/x", "inside --dataset"),  # issue 23.9
    ("cluster", "--dataset {D} --features hog --out {D}", "inside --dataset"),
    ("cluster", "--dataset {M} --features hog --out {R}/c", "not found"),
    ("crop", "--src {P} --dst {F}/o", "which is a file"),  # issue 23.8: outputs that cannot be written
    ("predict", "--model {M} {P} --out {F}/o", "which is a file"),
    ("cluster", "--dataset {D} --features hog --out {F}/c", "which is a file"),
    ("demo", "--out {F}/demo", "which is a file"),
    ("demo", "--out {R}/demo --subjects 2", "--subjects 2"),
    ("demo", "--out {R}/demo --epochs 0", "--epochs 0"),
    ("demo", "--out {R}/demo --img-size 4", "--img-size 4"),
]


@pytest.mark.parametrize("script, argv, message", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_bad_values_give_one_error_line_and_exit_2(places, script, argv, message, caplog):
    caplog.set_level(logging.INFO)
    code = run(SCRIPTS[script].main, [a.format(**places) for a in argv.split()])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == EXIT_USER_ERROR, caplog.text
    assert len(errors) == 1 and errors[0].startswith("error: ") and "\n" not in errors[0]
    assert message in errors[0]
    assert not (Path(places["R"]) / "c").exists() and not (Path(places["R"]) / "o").exists()  # no work done


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_argparse_mistakes_exit_2(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        SCRIPTS[script].main(["--no-such-option"])
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.parametrize("verb, argv", [("crop", "--src {P} --dst {R}/o"), ("pipeline", "--src {P} --out {R}/o"),
                                         ("cluster", "--dataset {D} --features hog --out {R}/c"),
                                         ("train", "--dataset {D}")])
def test_a_negative_seed_is_refused_by_the_parser(places, verb, argv, capsys):
    """Issue 23.12: --seed -1 was a NumPy traceback after the work had started."""
    from efr.commands import main as efr

    with pytest.raises(SystemExit) as exit_info:
        efr([verb, *[a.format(**places) for a in argv.split()], "--seed", "-1"])
    assert exit_info.value.code == EXIT_USER_ERROR
    assert "--seed: -1: use a whole number from 0" in capsys.readouterr().err
    assert not (Path(places["R"]) / "o").exists()


@pytest.fixture
def read_only(monkeypatch):
    """Every folder refuses new files (tests run as root, where chmod does not stop writes)."""
    import errno

    from efr.io import writable

    def refuse(folder):
        raise PermissionError(errno.EACCES, "Permission denied", str(folder))

    monkeypatch.setattr(writable, "_probe", refuse)


@pytest.mark.parametrize("verb, argv", [
    ("crop", "--src {P} --dst {R}/o"), ("pipeline", "--src {P} --out {R}/o"),
    ("predict", "--model {M} {P} --out {R}/o"),
    ("evaluate", "--model {M} --data {P} --out {R}/o"), ("cluster", "--dataset {D} --features hog --out {R}/c"),
    ("demo", "--out {R}/o")])
def test_a_read_only_output_folder_is_one_line_before_any_work(places, read_only, verb, argv, caplog):
    """Issue 23.8: a read-only --out/--dst gave tracebacks (predict's after all its work)."""
    from efr.commands import main as efr

    assert efr([verb, *[a.format(**places) for a in argv.split()]]) == EXIT_USER_ERROR
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot write in" in errors[0] and "Permission denied" in errors[0], errors
    assert not (Path(places["R"]) / "o").exists()


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, caplog):
    """Issue 23.8: a full disk during crop was a traceback; now one line with the file being written."""
    import errno

    from efr.commands import main as efr
    from efr.crop import workers
    from efr.data.synthetic.render import generate_rafd_like
    from efr.io.imageio import atomic_path

    def full_disk(path, image, **options):
        with atomic_path(path):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(workers, "write_image", full_disk)
    generate_rafd_like(tmp_path / "photos", subjects=3, seed=0, size=(170, 256), emotions=("Happy",),
                       gazes=("frontal",))
    code = efr(["crop", "--src", str(tmp_path / "photos"), "--dst", str(tmp_path / "D"), "--workers", "1", "--quiet"])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == EXIT_USER_ERROR and len(errors) == 1, caplog.text
    assert "No space left on device" in errors[0] and str(tmp_path / "D") in errors[0]
    assert "free some space" in errors[0]


def test_one_class_dataset_is_a_clear_error(places, tmp_path, caplog):
    one = make_tiny_dataset(tmp_path, subjects=4, size=32, gazes=("frontal",), emotions=("Happy",),
                            fractions=(0.5, 0.25, 0.25))
    code = run(cluster.main, ["--dataset", str(one), "--features", "hog", "--out", str(tmp_path / "c"), "--quiet"])
    assert code == EXIT_USER_ERROR and "needs at least 2" in caplog.text


def test_cluster_warns_when_centroids_come_from_the_clustered_split(places, tmp_path, caplog):
    code = run(cluster.main, ["--dataset", places["D"], "--features", "hog", "--out", str(tmp_path / "c"),
                              "--split", "Train", "--centroid-split", "Train", "--pca", "5000", "--methods", "kmeans",
                              "--map", "pca", "--quiet"])
    assert code == 0
    assert "optimistic score" in caplog.text and "--pca 5000" in caplog.text and "using" in caplog.text


RUNNER = (
    "import runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "except SystemExit as done:\n"
    "    print('TENSORFLOW' if 'tensorflow' in sys.modules else 'NO-TENSORFLOW', file=sys.stderr)\n"
    "    raise\n"
)
FIRST_CASE = {script: next(c for c in CASES if c[0] == script) for script in SCRIPTS}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_value_errors_come_before_tensorflow_and_without_traceback(places, script):
    _, argv, message = FIRST_CASE[script]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", RUNNER, str(REPO / f"{script}.py"),
                             *[a.format(**places) for a in argv.split()]],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "Traceback" not in result.stderr and message in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] != []
    assert result.stderr.strip().endswith("NO-TENSORFLOW")
