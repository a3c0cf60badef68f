"""Routing clusters: group the evaluation set by the paths its instances take.

A routing vector is an instance's selected-branch mask (or its branch weights) over all cells.
Vectors are clustered with scikit-learn (k-means, or agglomerative with a Hamming, Jaccard or
Euclidean distance), embedded in 2-D (PCA or t-SNE), and compared with the classes through the
adjusted mutual information. Masks repeat a lot (a few hundred distinct paths over 10,000 images),
so clustering and embedding run on the distinct vectors and map back: identical paths always
share a cluster and a point, and the cost no longer grows with the square of the set size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import adjusted_mutual_info_score, pairwise_distances

from drnet_core.architecture import Architecture
from drnet_core.analysis.evaluate import RoutedRun

VECTOR_KINDS = ("mask", "weights")
CLUSTER_METHODS = ("kmeans", "agglomerative")
METRICS = ("hamming", "jaccard", "euclidean")
EMBEDDINGS = ("pca", "tsne")
# Agglomerative clustering and t-SNE on weights need an N x N distance matrix.
MAX_DENSE_ROWS = 4000


@dataclass
class Clustering:
    labels: np.ndarray     # (N,) cluster of each instance, 0 = largest cluster
    k: int                 # clusters found (can be below the requested k when fewer distinct paths exist)
    requested_k: int
    method: str
    metric: str


def routing_vectors(run: RoutedRun, kind: str = "mask") -> np.ndarray:
    if kind == "mask":
        return run.path_masks.numpy().astype(bool)
    if kind == "weights":
        return run.branch_weights.numpy().astype(np.float64)
    raise ValueError(f"unknown routing vector kind {kind!r}; choose one of {VECTOR_KINDS}")


def _distinct(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct rows, row of each instance, count of each distinct row)."""
    rows, inverse, counts = np.unique(vectors, axis=0, return_inverse=True, return_counts=True)
    return rows, np.asarray(inverse).ravel(), counts


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    sizes = np.bincount(labels)
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[labels]


def cluster_routes(vectors: np.ndarray, k: int, *, method: str = "kmeans", metric: str = "hamming",
                   seed: int = 0) -> Clustering:
    """Cluster routing vectors. k-means always uses Euclidean distance (on 0/1 masks that is the
    square root of the Hamming distance); agglomerative uses `metric` with average linkage."""
    if method not in CLUSTER_METHODS:
        raise ValueError(f"unknown clustering method {method!r}; choose one of {CLUSTER_METHODS}")
    if metric not in METRICS:
        raise ValueError(f"unknown distance {metric!r}; choose one of {METRICS}")
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    if len(vectors) == 0:
        raise ValueError("no routing vectors to cluster")
    if method == "agglomerative" and metric in ("hamming", "jaccard") and vectors.dtype != bool:
        raise ValueError(f"the {metric.title()} distance compares selected-branch masks; "
                         "cluster branch weights with the Euclidean distance")
    rows, inverse, counts = _distinct(vectors)
    inverse = np.asarray(inverse).ravel()
    effective_k = min(k, len(rows))
    if effective_k < 2:
        return Clustering(np.zeros(len(vectors), dtype=int), 1, k, method, metric)
    if method == "kmeans":
        model = KMeans(n_clusters=effective_k, n_init=4, random_state=seed)
        row_labels = model.fit_predict(rows.astype(np.float64), sample_weight=counts)
    else:
        if len(rows) > MAX_DENSE_ROWS:
            raise ValueError(f"agglomerative clustering of {len(rows):,} distinct vectors needs a "
                             f"{len(rows):,}² distance matrix; use at most {MAX_DENSE_ROWS:,} images "
                             "(the 'first N images' setting), selected-branch masks, or k-means")
        data = rows.astype(bool) if metric in ("hamming", "jaccard") else rows.astype(np.float64)
        distances = pairwise_distances(data, metric=metric)
        distances = np.nan_to_num(distances, nan=0.0)  # jaccard of two empty masks
        row_labels = AgglomerativeClustering(n_clusters=effective_k, metric="precomputed",
                                             linkage="average").fit_predict(distances)
    labels = _relabel_by_size(np.asarray(row_labels)[inverse])
    return Clustering(labels, int(labels.max()) + 1, k, method, metric)


def embed_2d(vectors: np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates. Identical masks share one point; a little seeded jitter keeps them visible."""
    if method not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {method!r}; choose one of {EMBEDDINGS}")
    rows, inverse, _ = _distinct(vectors)
    inverse = np.asarray(inverse).ravel()
    data = rows.astype(np.float64)
    if len(rows) < 3 or float(np.ptp(data, axis=0).max(initial=0.0)) == 0.0:
        coords = np.zeros((len(rows), 2))
    elif method == "pca":
        coords = PCA(n_components=2, random_state=seed).fit_transform(data)
    else:
        if len(rows) > MAX_DENSE_ROWS:
            raise ValueError(f"t-SNE of {len(rows):,} distinct vectors is too slow for a live view; use at most "
                             f"{MAX_DENSE_ROWS:,} images, selected-branch masks, or PCA")
        metric = "hamming" if vectors.dtype == bool else "euclidean"
        perplexity = float(min(30.0, max(2.0, (len(rows) - 1) / 3)))
        coords = TSNE(n_components=2, metric=metric, init="random" if metric == "hamming" else "pca",
                      perplexity=perplexity, random_state=seed).fit_transform(data)
    coords = coords[inverse]
    scale = float(np.ptp(coords, axis=0).max(initial=0.0)) or 1.0
    jitter = np.random.default_rng(seed).normal(scale=0.012 * scale, size=coords.shape)
    return coords + jitter


def adjusted_mutual_information(cluster_labels: np.ndarray, class_labels: np.ndarray) -> float:
    """AMI between clusters and true classes: 0 = no more shared than chance, 1 = identical partitions."""
    return float(adjusted_mutual_info_score(np.asarray(class_labels), np.asarray(cluster_labels)))


def cluster_summary(clustering: Clustering, run: RoutedRun, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Per cluster: size, share, dominant class and its share, accuracy, mean MFLOPs, distinct paths."""
    labels = run.labels.numpy()
    correct = run.correct.numpy()
    mflops = run.mflops.numpy()
    masks = run.path_masks.numpy()
    rows = []
    for cluster in range(clustering.k):
        members = clustering.labels == cluster
        if not members.any():
            continue
        classes = np.bincount(labels[members], minlength=len(class_names))
        top = int(classes.argmax())
        rows.append({"cluster": cluster + 1, "size": int(members.sum()), "share": float(members.mean()),
                     "dominant class": class_names[top], "dominant share": float(classes[top] / members.sum()),
                     "accuracy": float(correct[members].mean()), "mean MFLOPs": float(mflops[members].mean()),
                     "distinct paths": int(len(np.unique(masks[members], axis=0)))})
    return pd.DataFrame(rows)


def class_mix(clustering: Clustering, run: RoutedRun, class_names: tuple[str, ...]) -> pd.DataFrame:
    """(clusters x classes) counts."""
    labels = run.labels.numpy()
    table = np.zeros((clustering.k, len(class_names)), dtype=int)
    np.add.at(table, (clustering.labels, labels), 1)
    return pd.DataFrame(table, index=[f"cluster {c + 1}" for c in range(clustering.k)], columns=list(class_names))


def typical_path(clustering: Clustering, run: RoutedRun, cluster: int,
                 architecture: Architecture) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per cell, (connections, branches) mean branch weights and majority-vote selected masks of one
    cluster (0-based), as `routing_graph.routing_graph_of_cells` draws them."""
    members = clustering.labels == cluster
    if not members.any():
        raise ValueError(f"cluster {cluster + 1} is empty")
    masks = run.path_masks.numpy()[members]
    weights = run.branch_weights.numpy()[members]
    return architecture.split_per_cell(weights.mean(axis=0)), architecture.split_per_cell(masks.mean(axis=0) >= 0.5)


def exemplars(clustering: Clustering, vectors: np.ndarray, cluster: int, count: int = 8) -> np.ndarray:
    """Positions of the `count` members closest to the cluster's mean routing vector."""
    members = np.flatnonzero(clustering.labels == cluster)
    if len(members) == 0:
        return members
    data = vectors[members].astype(np.float64)
    distance = np.abs(data - data.mean(axis=0)).sum(axis=1)
    return members[np.argsort(distance, kind="stable")[:count]]
