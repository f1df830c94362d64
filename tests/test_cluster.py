"""Classification by clustering: Hungarian matching, scores on clusters that are (and are
not) there, features from a model's penultimate layer, and cluster.py end to end."""

import json

import numpy as np
import pytest

from efr.evaluate import cluster
from efr.io.errors import EFRError


def test_permuted_labelling_matches_perfectly():
    true = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    relabel = {0: 3, 1: 0, 2: 1, 3: 2}
    pred = np.array([relabel[t] for t in true])
    mapping, accuracy = cluster.match_clusters(true, pred)
    assert accuracy == 1.0
    assert mapping == {v: k for k, v in relabel.items()}


def test_matching_is_one_to_one_and_counts_the_best_naming():
    # cluster 0 holds most of both classes 0 and 1: only one of them may take its name
    true = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 0, 0, 0, 1, 2, 2])
    mapping, accuracy = cluster.match_clusters(true, pred)
    assert len(set(mapping.values())) == len(mapping)
    # naming cluster 0 after class 1 gets 3 + 0 + 2 = 5 right; after class 0, 3 + 1 + 2 = 6
    assert mapping == {0: 0, 1: 1, 2: 2}
    assert accuracy == pytest.approx(6 / 9)


def test_more_clusters_than_classes_leaves_extras_unnamed():
    true = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 2, 3])
    mapping, accuracy = cluster.match_clusters(true, pred)
    assert len(mapping) == 2 and accuracy == 0.5


@pytest.mark.parametrize("method", cluster.METHODS)
def test_well_separated_blobs_are_recovered(method):
    from sklearn.datasets import make_blobs

    features, labels = make_blobs(n_samples=300, centers=5, n_features=20, cluster_std=1.0, random_state=0)
    scores = cluster.cluster_scores(features.astype(np.float32), labels, 5, method, seed=0)
    assert scores["matched_accuracy"] > 0.95
    assert scores["nmi"] > 0.9 and scores["ari"] > 0.9


def test_noise_scores_at_chance():
    rng = np.random.default_rng(0)
    features = rng.uniform(size=(700, 10)).astype(np.float32)
    labels = rng.integers(0, 7, size=700)
    scores = cluster.cluster_scores(features, labels, 7, "kmeans", seed=0)
    assert scores["matched_accuracy"] < 0.22  # chance is 1/7 = 0.14 (matching lifts it a little)
    assert scores["nmi"] < 0.03 and abs(scores["ari"]) < 0.02


def test_clustering_is_repeatable_with_a_seed():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(120, 6)).astype(np.float32)
    first = cluster.cluster_labels(features, 4, "kmeans", seed=3)
    second = cluster.cluster_labels(features, 4, "kmeans", seed=3)
    np.testing.assert_array_equal(first, second)


def test_nearest_centroid_separates_shifted_classes_and_not_noise():
    rng = np.random.default_rng(2)
    train = np.concatenate([rng.normal(0, 1, (50, 5)), rng.normal(6, 1, (50, 5))])
    test = np.concatenate([rng.normal(0, 1, (20, 5)), rng.normal(6, 1, (20, 5))])
    labels_train, labels_test = np.repeat([0, 1], 50), np.repeat([0, 1], 20)
    assert cluster.nearest_centroid_accuracy(train, labels_train, test, labels_test) == 1.0
    shuffled = rng.permutation(labels_train)
    noise = cluster.nearest_centroid_accuracy(rng.normal(size=(100, 5)), shuffled, rng.normal(size=(40, 5)),
                                              labels_test)
    assert noise < 0.8


def test_unknown_method_and_too_few_faces_are_user_errors():
    with pytest.raises(EFRError, match="unknown clustering method"):
        cluster.cluster_labels(np.zeros((10, 2)), 2, "dbscan")
    with pytest.raises(EFRError, match="cannot form"):
        cluster.cluster_labels(np.zeros((3, 2)), 7, "kmeans")


def test_embedding_model_stops_before_the_last_dense():
    from efr.models.build import seed_cnn

    model = seed_cnn(5, 32)
    embed = cluster.embedding_model(model)
    assert embed.output_shape == (None, 64)  # the seed CNN's Dense(64) feeds the softmax


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from train_fixtures import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.mktemp("cluster"), subjects=6, size=48,
                             emotions=("Happy", "Sad", "Surprised"), fractions=(0.5, 0.17, 0.33))


@pytest.mark.slow
def test_cluster_script_with_a_model_writes_json_and_map(tiny_dataset, tmp_path):
    import cluster as cluster_script
    from efr.models.modelio import save_model
    from efr.models.build import seed_cnn

    model_path = tmp_path / "best.keras"
    save_model(seed_cnn(3, 48), model_path, {"class_names": ["Happy", "Sad", "Surprised"]})
    out = tmp_path / "cluster"
    code = cluster_script.main(["--dataset", str(tiny_dataset), "--model", str(model_path), "--out", str(out),
                                "--pca", "8", "--quiet"])
    assert code == 0
    results = json.loads((out / "cluster.json").read_text())
    assert set(results["clustering"]) == set(cluster.METHODS)
    assert results["features"] == "model" and results["feature_dimensions"] == 64 and results["pca"] == 8
    for scores in results["clustering"].values():
        assert 0.0 <= scores["matched_accuracy"] <= 1.0
        assert sorted(scores["mapping"].values()) == sorted(results["classes_present"])
    assert 0.0 <= results["nearest_centroid"]["accuracy"] <= 1.0
    assert "versions" in results and results["versions"]["efr"]
    assert (out / "cluster_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("features", ["pixels", "hog"])
def test_cluster_script_baselines_without_a_model(tiny_dataset, tmp_path, features):
    import cluster as cluster_script

    out = tmp_path / features
    assert cluster_script.main(["--dataset", str(tiny_dataset), "--features", features, "--out", str(out),
                                "--map", "pca", "--methods", "kmeans", "--quiet"]) == 0
    results = json.loads((out / "cluster.json").read_text())
    assert results["feature_dimensions"] == (48 * 48 if features == "pixels" else 1764)
    assert results["map"] == "pca"


def test_cluster_script_errors(tiny_dataset, tmp_path):
    from efr.commands.cli import EXIT_USER_ERROR, run

    import cluster as cluster_script

    assert run(cluster_script.main, ["--dataset", str(tiny_dataset), "--out", str(tmp_path / "o"), "--quiet"]) \
        == EXIT_USER_ERROR  # --features model without --model
    assert run(cluster_script.main, ["--dataset", str(tmp_path / "missing"), "--features", "hog",
                                     "--out", str(tmp_path / "o"), "--quiet"]) == EXIT_USER_ERROR


def test_cluster_refuses_a_model_of_an_unfinished_run(tiny_dataset, tmp_path, caplog):
    from efr.io import runstate
    from efr.commands.cli import EXIT_USER_ERROR, run
    from efr.models.modelio import save_model
    from efr.models.build import seed_cnn

    import cluster as cluster_script

    run_dir = tmp_path / "runs" / "r"
    save_model(seed_cnn(3, 48), run_dir / "best.keras", {"class_names": ["Happy", "Sad", "Surprised"]})
    runstate.write_state(run_dir, runstate.INTERRUPTED)
    argv = ["--dataset", str(tiny_dataset), "--model", str(run_dir / "best.keras"), "--out", str(tmp_path / "o"),
            "--pca", "8", "--methods", "kmeans", "--map", "pca", "--quiet"]
    assert run(cluster_script.main, argv) == EXIT_USER_ERROR
    assert "which is interrupted" in caplog.text and "--allow-unfinished" in caplog.text
    assert not (tmp_path / "o").exists()
    assert run(cluster_script.main, [*argv, "--allow-unfinished"]) == 0
