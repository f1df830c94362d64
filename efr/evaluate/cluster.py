"""Classification by clustering: do the faces of one emotion fall together?

Features of the faces of a Dataset split (a trained model's penultimate layer, or raw
pixels or HOG descriptors as baselines) are optionally standardised and PCA-reduced,
clustered into k = number of classes groups (k-means, agglomerative/Ward, or a
Gaussian mixture), and each cluster is matched to one emotion with the Hungarian
algorithm.  Scores: matched accuracy (the accuracy of the best one-to-one cluster ->
emotion naming), NMI and ARI (which need no naming), and the accuracy of a
nearest-centroid classifier that takes its centroids from the Train split.

Labels are used only to score and to name clusters, never to form them (except the
nearest-centroid classifier, which is supervised by design and shown for contrast).
"""

import logging
from pathlib import Path

import numpy as np

from efr.io import runstate
from efr.io.errors import EFRError
from efr.io.writable import check_writable

log = logging.getLogger(__name__)

FEATURES = ("model", "pixels", "hog")
METHODS = ("kmeans", "agglomerative", "gmm")
PIXEL_SIZE = 48  # side of the grey thumbnails used as raw-pixel features
HOG_SIZE = 64  # side of the grey image HOG describes: 7x7 blocks of 16 px, stride 8, 9 bins -> 1764 values


# --------------------------------------------------------------------------- scoring


def match_clusters(true, pred):
    """Best one-to-one naming of clusters by classes (Hungarian algorithm on the contingency table).

    Returns (mapping {cluster: class}, matched accuracy).  With more clusters than
    classes the extra clusters stay unnamed and count as errors.
    """
    from scipy.optimize import linear_sum_assignment

    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"true and pred must be 1-D of one length, got {true.shape} and {pred.shape}")
    if true.size == 0:
        raise ValueError("no samples to match")
    clusters, pred_index = np.unique(pred, return_inverse=True)
    classes, true_index = np.unique(true, return_inverse=True)
    table = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(table, (pred_index, true_index), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = {clusters[r].item(): classes[c].item() for r, c in zip(rows, cols)}
    return mapping, float(table[rows, cols].sum() / true.size)


def cluster_labels(features, k, method="kmeans", seed=0):
    """Cluster ids 0..k-1 for each row of ``features``."""
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.mixture import GaussianMixture

    if method not in METHODS:
        raise EFRError(f"unknown clustering method {method!r}: choose one of {', '.join(METHODS)}")
    if len(features) < k:
        raise EFRError(f"{len(features)} faces cannot form {k} clusters: use a larger split")
    if method == "kmeans":
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)
    if method == "agglomerative":
        return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(features)
    return GaussianMixture(n_components=k, covariance_type="diag", n_init=3, random_state=seed).fit_predict(features)


def cluster_scores(features, labels, k, method="kmeans", seed=0):
    """Cluster ``features`` into ``k`` groups and score them against ``labels``.

    Returns a dict: matched_accuracy, nmi, ari, majority_accuracy (always naming the
    largest class: what a useless clustering's naming can reach), mapping, sizes.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    pred = cluster_labels(features, k, method, seed)
    mapping, accuracy = match_clusters(labels, pred)
    counts = np.bincount(labels) if labels.size and labels.min() >= 0 else np.unique(labels, return_counts=True)[1]
    return {
        "method": method,
        "k": int(k),
        "matched_accuracy": accuracy,
        "nmi": float(normalized_mutual_info_score(labels, pred)),
        "ari": float(adjusted_rand_score(labels, pred)),
        "majority_accuracy": float(counts.max() / labels.size),
        "mapping": {int(c): int(e) for c, e in mapping.items()},
        "cluster_sizes": np.bincount(pred, minlength=k).tolist(),
    }


def nearest_centroid_accuracy(train_features, train_labels, test_features, test_labels):
    """Accuracy on the test features of a nearest-centroid classifier fitted on the train ones."""
    from sklearn.neighbors import NearestCentroid

    classifier = NearestCentroid().fit(train_features, train_labels)
    return float(np.mean(classifier.predict(test_features) == np.asarray(test_labels)))


def fit_reducer(features, pca=None, seed=0):
    """Standardise (and PCA to ``pca`` dimensions) fitted on ``features``; returns a transform function."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [StandardScaler()]
    if pca:
        components = min(int(pca), features.shape[0], features.shape[1])
        if components < int(pca):
            log.warning("warning: --pca %d: %d faces x %d features allow at most %d dimensions; using %d",
                        pca, *features.shape, components, components)
        steps.append(PCA(n_components=components, random_state=seed))
    pipeline = make_pipeline(*steps).fit(features)
    return lambda x: pipeline.transform(x).astype(np.float32)


# --------------------------------------------------------------------------- features


def embedding_model(model):
    """A keras Model from ``model``'s inputs to the input of its final Dense layer (the penultimate features)."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise EFRError(f"model {model.name!r} has no Dense layer: cannot find its penultimate features")
    return keras.Model(model.inputs, dense[-1].input, name=f"{model.name}_embedding")


def model_features(model, paths, image_size, batch_size=64):
    """Penultimate-layer features (n, d) float32 of a trained EFR model for image files."""
    from efr.data import pipelines as efr_data

    embed = embedding_model(model)
    features = embed.predict(efr_data.make_image_dataset(paths, image_size, batch_size), verbose=0)
    return np.asarray(features, dtype=np.float32).reshape(len(paths), -1)


def _grey(path, size):
    import cv2

    from efr.io.imageio import read_image

    grey = cv2.cvtColor(read_image(path), cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)


def pixel_features(paths, size=PIXEL_SIZE):
    """Grey size x size thumbnails, flattened, in [0, 1] (float32, one row per file)."""
    out = np.empty((len(paths), size * size), dtype=np.float32)
    for i, path in enumerate(paths):
        out[i] = _grey(path, size).reshape(-1) / 255.0
    return out


def hog_features(paths, size=HOG_SIZE):
    """OpenCV HOG descriptors of grey size x size faces (float32, one row per file; efr.models.features' HOG)."""
    from efr.models.features import hog_features as hog_of_images

    return hog_of_images([_grey(path, size) for path in paths], size)


def fusion_embedding(model, meta, paths, subjects=None):
    """A fusion model's standardised (and, for --subject-norm models, per-person centred) vectors."""
    from efr.models.fusion import FusionRunner, read_faces

    runner = FusionRunner(model, meta)
    return runner.embedding(read_faces(paths), groups=subjects if runner.spec.subject_norm else None)


def extract_features(kind, paths, model=None, image_size=None, meta=None, subjects=None):
    if kind == "model":
        if model is None:
            raise EFRError("--features model needs --model runs/<name>/best.keras")
        from efr.models.fusion import is_fusion

        if is_fusion(meta):
            return fusion_embedding(model, meta, paths, subjects)
        return model_features(model, paths, image_size)
    if kind == "pixels":
        return pixel_features(paths)
    if kind == "hog":
        return hog_features(paths)
    raise EFRError(f"unknown features {kind!r}: choose one of {', '.join(FEATURES)}")


# --------------------------------------------------------------------------- map


def embedding_map(features, labels, class_names, path, method="tsne", seed=0, title=None):
    """Save a 2-D map (t-SNE or PCA) of ``features`` coloured by true emotion as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from efr.io.imageio import atomic_path

    labels = np.asarray(labels)
    if method == "tsne" and len(features) > 5:
        perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    else:
        method = "pca"
        points = PCA(n_components=2, random_state=seed).fit_transform(features)
    fig, ax = plt.subplots(figsize=(7, 6))
    colours = plt.get_cmap("tab10")
    for index, name in enumerate(class_names):
        chosen = labels == index
        if chosen.any():
            ax.scatter(points[chosen, 0], points[chosen, 1], s=18, color=colours(index % 10), label=name, alpha=0.8)
    ax.set_title(title or f"{method.upper()} map of the features, coloured by true emotion")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, markerscale=1.5)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return method


# --------------------------------------------------------------------------- the whole stage


def _subjects_of(dataset, split, paths):
    """The subject of each file (from the manifest or RaFD names); "" where unknown."""
    from efr.data import pipelines as efr_data

    known = {str(s.path): s.subject for s in efr_data.scan_dataset(dataset, splits=(split,), require_all=False)}
    return [known.get(str(p), "") for p in paths]


MAP_METHODS = ("tsne", "pca")


def check_options(out_dir, features="model", pca=50, split="Test", centroid_split="Train", methods=METHODS,
                  map_method="tsne", dataset=None):
    """Raise EFRError for option values that cannot work, before any face is read or model loaded."""
    from efr.io.manifest import SPLITS

    problems = []
    if features not in FEATURES:
        problems.append(f"--features {features!r}: choose one of {', '.join(FEATURES)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        problems.append(f"--methods {','.join(methods)}: {'unknown ' + ', '.join(unknown) if unknown else 'none given'}"
                        f"; choose from {', '.join(METHODS)} (comma-separated)")
    if pca is not None and int(pca) < 0:
        problems.append(f"--pca {pca}: use 0 (no PCA) or a positive number of dimensions")
    for option, value in (("--split", split), ("--centroid-split", centroid_split)):
        if value is not None and value not in SPLITS:
            problems.append(f"{option} {value!r}: choose one of {', '.join(SPLITS)}"
                            + (" ('' for none)" if option == "--centroid-split" else ""))
    if map_method not in MAP_METHODS:
        problems.append(f"--map {map_method!r}: choose one of {', '.join(MAP_METHODS)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        problems.append(f"--out {out} is a file: give a folder (it is created if missing)")
    if dataset is not None and out.resolve().is_relative_to(Path(dataset).resolve()):
        # Files written there would be read as faces (or break the split layout) by every later train and cluster.
        problems.append(f"--out {out} is inside --dataset {dataset}: cluster never writes into the Dataset; "
                        "choose an --out elsewhere (e.g. runs/<name>/cluster)")
    if problems:
        raise EFRError("; ".join(problems))
    check_writable(out)
    if centroid_split and centroid_split == split:
        log.warning("warning: --centroid-split %s is the clustered --split: the nearest-centroid classifier is "
                    "scored on the faces its centroids come from, an optimistic score (use --centroid-split Train, "
                    "or '' for none)", split)


def run_clustering(dataset, out_dir, model_path=None, features="model", pca=50, split="Test", centroid_split="Train",
                   methods=("kmeans", "agglomerative", "gmm"), map_method="tsne", seed=0, allow_unfinished=False):
    """Cluster one split's faces and write cluster.json and cluster_map.png into ``out_dir``.

    Returns the results dict (also written to cluster.json with settings and versions).
    """
    from efr.io.runinfo import library_versions, machine_info, write_json

    check_options(out_dir, features, pca, split, centroid_split, methods, map_method, dataset=dataset)
    model, meta, class_names, image_size = _load_feature_model(model_path, features, allow_unfinished)
    paths, labels, class_names, present = _split_faces(dataset, split, class_names)
    k = len(present)
    log.info("%s: %d faces of %d emotions; %s features", split, len(paths), k, features)
    test_raw = extract_features(features, paths, model, image_size, meta, _subjects_of(dataset, split, paths))
    train_raw, train_labels = _centroid_features(dataset, centroid_split, class_names, features, model, image_size,
                                                 meta)

    # Standardisation and PCA are fitted on the Train split when there is one (as a
    # classifier would be), else on the clustered split itself (unsupervised either way).
    reduce = fit_reducer(train_raw if train_raw is not None else test_raw, pca, seed)
    test_features = reduce(test_raw)
    results = {
        "dataset": str(dataset),
        "split": split,
        "images": len(paths),
        "class_names": class_names,
        "classes_present": [class_names[i] for i in present],
        "features": features,
        "feature_dimensions": int(test_raw.shape[1]),
        "pca": int(test_features.shape[1]) if pca else None,
        "model": str(model_path) if model_path else None,
        "model_meta": {key: meta[key] for key in ("model", "image_size", "run") if key in meta},
        "seed": seed,
        "clustering": _score_methods(test_features, labels, k, methods, class_names, seed),
    }
    if train_raw is not None:
        results["nearest_centroid"] = {
            "centroids_from": centroid_split,
            "train_images": int(len(train_labels)),
            "accuracy": nearest_centroid_accuracy(reduce(train_raw), train_labels, test_features, labels),
        }
        log.info("nearest centroid (centroids from %s): accuracy %.3f", centroid_split,
                 results["nearest_centroid"]["accuracy"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results["map"] = embedding_map(
        test_features, labels, class_names, out_dir / "cluster_map.png", map_method, seed,
        title=f"{split}: {features} features ({map_method.upper()}), coloured by true emotion",
    )
    write_json(out_dir / "cluster.json", dict(results, versions=library_versions(), machine=machine_info()))
    return results


def _load_feature_model(model_path, features, allow_unfinished):
    """(model, its EFR metadata, class names, input side) of ``model_path``; all empty without one."""
    if model_path is None:
        if features == "model":
            raise EFRError("--features model needs --model runs/<name>/best.keras (or use --features pixels or hog)")
        return None, {}, None, None
    from efr.models.modelio import load_model, read_meta

    read_meta(model_path)  # a missing or foreign file is refused first
    runstate.check_model_finished(model_path, allow_unfinished, log)
    model, meta = load_model(model_path)
    return model, meta, list(meta["class_names"]), int(meta["image_size"][0])


def _split_faces(dataset, split, class_names):
    """(paths, labels, class names, the classes present) of the split to cluster; it needs 2 emotions or more."""
    from efr.data import pipelines as efr_data

    paths, labels, class_names = efr_data.list_split(dataset, split, include_augmented=False, class_names=class_names)
    if not paths:
        raise EFRError(f"{Path(dataset) / split} has no images: run crop.py first, or choose another --split")
    labels = np.asarray(labels)
    present = sorted(set(labels.tolist()))
    k = len(present)
    if k < 2:
        raise EFRError(f"{Path(dataset) / split} holds faces of {k} emotion ({', '.join(class_names[i] for i in present)})"
                       ": clustering by emotion needs at least 2; choose another --split or add photos")
    return paths, labels, class_names, present


def _centroid_features(dataset, centroid_split, class_names, features, model, image_size, meta):
    """(features, labels) of the ``centroid_split`` faces; (None, None) without that split."""
    from efr.data import pipelines as efr_data

    train_raw = train_labels = None
    if centroid_split:
        try:
            train_paths, train_labels, _ = efr_data.list_split(dataset, centroid_split, include_augmented=False,
                                                               class_names=class_names)
        except EFRError as err:
            log.warning("no nearest-centroid score: %s", err)
            train_paths = []
        if train_paths:
            train_raw = extract_features(features, train_paths, model, image_size, meta,
                                         _subjects_of(dataset, centroid_split, train_paths))
            train_labels = np.asarray(train_labels)
    return train_raw, train_labels


def _score_methods(features, labels, k, methods, class_names, seed):
    """{method: its cluster_scores, clusters named by emotion} for each clustering method."""
    clustering = {}
    for method in methods:
        scores = cluster_scores(features, labels, k, method, seed)
        scores["mapping"] = {str(c): class_names[e] for c, e in scores["mapping"].items()}
        clustering[method] = scores
        log.info("%-13s matched accuracy %.3f  NMI %.3f  ARI %.3f", method, scores["matched_accuracy"],
                 scores["nmi"], scores["ari"])
    return clustering
