"""EFR's own backbone: the FER2013 reader, the efrnet network, `efr backbone` (train, resume, finish), the shipped file."""

import csv
import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from efr.commands.cli import run
from efr.data import fer2013
from efr.io.errors import EFRError
from efr.models import efrnet
from efr.models.modelio import BUILTIN_MODELS, load_model, read_meta, resolve_model

REPO = Path(__file__).resolve().parents[1]
TINY = dict(epochs=2, batch_size=8, widths=(4, 4, 8, 8), dense=8, warmup_epochs=0.5)


def _face(label, index):
    """A 48x48 grey stand-in face whose brightness pattern depends on its label (learnable, not random)."""
    rng = np.random.default_rng(index)
    image = rng.integers(0, 60, (48, 48)).astype(np.uint8)
    image[:, label * 6:(label + 1) * 6] += 150
    return image


def write_fer_folders(root, per_class=(6, 3)):
    for split, count in zip(("Training", "PublicTest"), per_class):
        for label, emotion in enumerate(fer2013.FER2013_EMOTIONS):
            folder = root / split / emotion.lower()  # aliases are read as EFR's names
            folder.mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(folder / f"{split}_{label}{i}.png"), _face(label, 100 * label + i))
    return root


@pytest.fixture(scope="module")
def fer_folders(tmp_path_factory):
    return write_fer_folders(tmp_path_factory.mktemp("fer2013"))


def test_csv_and_folders_read_as_efr_classes(tmp_path):
    path = tmp_path / "fer2013.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for label, usage in ((4, "Training"), (6, "Training"), (1, "PublicTest"), (0, "PrivateTest")):
            writer.writerow([label, " ".join(str(v) for v in np.full(48 * 48, label * 10)), usage])
    images, labels, skipped = fer2013.load_split(tmp_path, "Training")
    # the csv's 4 is sad and 6 neutral; EFR's order puts Neutral before Sad
    assert images.shape == (2, 48, 48) and images.dtype == np.uint8 and skipped == []
    assert [fer2013.FER2013_EMOTIONS[i] for i in labels] == ["Sad", "Neutral"]
    assert int(images[0, 0, 0]) == 40
    assert fer2013.FER2013_EMOTIONS[fer2013.load_split(path, "PublicTest")[1][0]] == "Disgusted"
    folders = write_fer_folders(tmp_path / "folders", per_class=(1, 1))
    images, labels, _ = fer2013.load_split(folders, "PublicTest")
    assert images.shape == (7, 48, 48) and sorted(labels.tolist()) == list(range(7))


def test_bad_fer2013_sources_are_user_errors(tmp_path):
    with pytest.raises(EFRError, match="not found"):
        fer2013.check_source(tmp_path / "missing")
    with pytest.raises(EFRError, match="PublicTest"):
        fer2013.check_source(tmp_path)
    (tmp_path / "fer2013.csv").write_text("a,b\n1,2\n")
    with pytest.raises(EFRError, match="no column"):
        fer2013.load_split(tmp_path, "Training")
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    with pytest.raises(EFRError, match="line 2: 3 pixels"):
        fer2013.load_split(tmp_path, "Training")
    (tmp_path / "x" / "Training" / "Contemptuous").mkdir(parents=True)
    with pytest.raises(EFRError, match="not one of FER2013's emotions"):
        fer2013.load_split(tmp_path / "x", "Training")


def test_rgb_wrapper_sees_what_the_grey_network_sees():
    core = efrnet.efrnet_core(widths=(4, 4, 8, 8), dense=8)
    grey = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 1)).astype("float32")
    rgb = np.repeat(grey, 3, axis=-1)  # R = G = B: BT.601 grey of it is the same values
    expected = core.predict(grey, verbose=0)
    np.testing.assert_allclose(efrnet.wrap_rgb(core).predict(rgb, verbose=0), expected, atol=1e-4)
    assert efrnet.wrap_rgb(core, 96).predict(np.zeros((1, 96, 96, 3), "float32"), verbose=0).shape == (1, 7)


@pytest.mark.slow
def test_backbone_resumes_after_a_kill_and_finishes_with_an_efr_model(fer_folders, tmp_path, monkeypatch):
    from efr.train import backbone

    recipe = backbone.Recipe(**TINY)
    out = tmp_path / "run"
    real_write = backbone._write_history

    def killed_after_epoch_1(path, rows):
        real_write(path, rows)
        raise KeyboardInterrupt  # the process dies after epoch 1's files are written

    monkeypatch.setattr(backbone, "_write_history", killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        backbone.train_backbone(fer_folders, out, recipe)
    first = (out / backbone.HISTORY).read_text().splitlines()
    assert len(first) == 2 and (out / backbone.LAST).is_file() and (out / backbone.BEST).is_file()
    monkeypatch.setattr(backbone, "_write_history", real_write)
    lines = []
    rows = backbone.train_backbone(fer_folders, out, recipe, log=lines.append)
    assert [int(r["epoch"]) for r in rows] == [1, 2] and any("continuing" in line for line in lines)
    assert (out / backbone.HISTORY).read_text().splitlines()[:2] == first  # epoch 1 kept, not redone

    import keras

    steps = 42 // recipe.batch_size
    assert int(keras.models.load_model(out / backbone.LAST).optimizer.iterations) == 2 * steps
    with pytest.raises(EFRError, match="other settings"):
        backbone.train_backbone(fer_folders, out, backbone.Recipe(**{**TINY, "lr": 0.5}))

    metrics = backbone.finish(fer_folders, out, recipe)
    model, meta = load_model(out / backbone.SHIPPED_NAME)
    assert meta["class_names"] == list(fer2013.FER2013_EMOTIONS) and meta["image_size"] == [48, 48]
    assert meta["publictest"]["accuracy"] == metrics["accuracy"] and metrics["images"] == 21
    low, high = metrics["interval_95"]
    assert low <= metrics["accuracy"] <= high and "no subject ids" in metrics["note"]
    for name in ("metrics.json", "confusion_matrix.png", "curves.png"):
        assert (out / name).stat().st_size > 0


def test_backbone_command_refuses_bad_settings_before_any_work(tmp_path, caplog):
    from efr.commands import backbone as command

    assert run(command.main, ["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert run(command.main, ["--data", str(tmp_path), "--widths", "8,x", "--out", str(tmp_path / "o")]) == 2
    assert run(command.main, ["--data", str(tmp_path), "--epochs", "0", "--out", str(tmp_path / "o")]) == 2
    assert caplog.text.count("error:") == 3 and "Traceback" not in caplog.text and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------ the shipped model


def test_shipped_efrnet_is_the_file_its_card_describes():
    path = BUILTIN_MODELS["efrnet"]
    assert resolve_model("efrnet") == path and resolve_model("EFRNET") == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == efrnet.BUILTIN_SHA256
    assert path.stat().st_size < 20 * 1024 * 1024
    meta = read_meta("efrnet")
    assert meta["class_names"] == list(fer2013.FER2013_EMOTIONS) and meta["model"] == "efrnet"
    card = (REPO / "docs" / "model-card.md").read_text(encoding="utf-8")
    assert efrnet.BUILTIN_SHA256 in card
    # the card's PublicTest figures are the file's own
    public = meta["publictest"]
    assert f"{public['accuracy']:.4f}" in card and f"{public['flip_tta']['accuracy']:.4f}" in card
    assert re.search(rf"{public['images']:,}|{public['images']}", card)


@pytest.mark.slow
def test_builtin_efrnet_predicts_a_photo_by_name(tmp_path, capsys):
    from efr.commands import predict as command
    from efr.data.synthetic.render import render_face

    photo = tmp_path / "Rafd090_01_Caucasian_female_happy_frontal.jpg"
    cv2.imwrite(str(photo), render_face(1, "Happy", size=(340, 512)))
    assert run(command.main, ["--model", "efrnet", str(photo), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p" / "predictions.csv", newline="")))
    assert len(rows) == 1 and rows[0]["label"] in fer2013.FER2013_EMOTIONS
    assert [k[5:] for k in rows[0] if k.startswith("prob_")] == list(fer2013.FER2013_EMOTIONS)
    assert not list(efrnet.BUILTIN_PATH.parent.glob("eval-*"))  # nothing written beside the shipped file


def test_efrnet_as_transfer_model_and_fusion_trunk():
    from efr.models import fusion, transfer

    built = transfer.build_transfer_model("efrnet", 8, image_size=64)
    assert built.model.input_shape == (None, 64, 64, 3) and built.model.output_shape == (None, 8)
    assert built.backbone.name == "efrnet_trunk" and built.backbone.output_shape == (None, 2304)
    assert built.meta["weights"]["source"] == "built-in efrnet"
    assert fusion.DEFAULT_BACKBONE == "efrnet"
    fused = fusion.build_fusion(8, parts=["trunk", "hog"])
    assert fused.spec.backbone == "efrnet" and fused.spec.image_size == 48 and fused.spec.trunk_dim == 2304 + 7
    with pytest.raises(EFRError, match="efrnet weights"):
        transfer.build_transfer_model("efrnet", 8, weights="/no/such/file.keras")
    card = json.loads(json.dumps(built.meta))
    assert card["model"] == "efrnet"


def test_a_mini_xception_file_given_to_efrnet_says_what_to_do(tmp_path):
    """Fusion's default trunk is now efrnet: an old `--weights fer2013.hdf5` must point to --backbone fer2013."""
    from efr.models import transfer

    path = tmp_path / "mini_xception.hdf5"
    transfer.mini_xception((64, 64, 1), 7, seed=1).save(path)
    with pytest.raises(EFRError, match="--backbone fer2013"):
        efrnet.load_core(str(path))
