"""Prototypes, K-means centres, shared precision and streamed feature extraction on planted data."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from wood_train.data.imageio import ImageDecodeError
from wood_train.data.transforms import normalize_image
from wood_train.model.cam_net import build_cam_net
from wood_train.wood.ood_centers import (
    FeatureImageDataset,
    class_prototypes,
    extract_features,
    feature_loader,
    kmeans_centers,
    shared_precision,
)

SIZE = 32


# ---- prototypes ----------------------------------------------------------------------------


def test_class_prototypes_equal_hand_computation():
    features = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [0.0, 6.0]], dtype=np.float32)
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])
    # class 0: rows 0, 1; class 1: rows 1, 2 (row 1 is multi-label: counted for both); class 2: 3
    expected = np.array([[2.0, 1.0], [4.0, 3.0], [0.0, 6.0]], dtype=np.float32)
    np.testing.assert_array_equal(class_prototypes(features, labels), expected)


def test_class_prototypes_streams_a_memmap(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(9000, 3)).astype(np.float32)  # more rows than one chunk
    labels = (rng.random((9000, 2)) < 0.5).astype(np.int64)
    stored = np.lib.format.open_memmap(tmp_path / "f.npy", "w+", np.float32, features.shape)
    stored[:] = features
    expected = [features[labels[:, c] == 1].astype(np.float64).mean(0) for c in range(2)]
    np.testing.assert_allclose(class_prototypes(stored, labels), np.stack(expected), rtol=1e-6)


def test_class_prototypes_names_an_empty_class():
    features = np.ones((3, 2), dtype=np.float32)
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"\['dog'\] \(index \[1\]\) have no image"):
        class_prototypes(features, labels, ["cat", "dog", "cow"])
    with pytest.raises(ValueError, match="multi-hot"):
        class_prototypes(features, labels * 2)
    with pytest.raises(ValueError, match="N = 3"):
        class_prototypes(features, labels[:2])


# ---- K-means -------------------------------------------------------------------------------


def planted_clusters(seed=0, per_cluster=40, dim=8):
    rng = np.random.default_rng(seed)
    means = np.array([[10.0] * dim, [-10.0] * dim, [10.0] * (dim // 2) + [-10.0] * (dim // 2)])
    points = np.concatenate([m + rng.normal(scale=0.5, size=(per_cluster, dim)) for m in means])
    truth = points.reshape(len(means), per_cluster, dim).mean(axis=1)
    return points.astype(np.float32), truth


def test_kmeans_recovers_planted_cluster_means():
    points, truth = planted_clusters()
    centers = kmeans_centers(points, k=3, seed=0)
    truth_sorted = truth[np.lexsort(truth.T[::-1])]
    np.testing.assert_allclose(centers, truth_sorted, atol=1e-4)
    assert centers.dtype == np.float32 and centers.shape == (3, 8)


@pytest.mark.parametrize("cap", [256, 4])  # 4: faiss trains on a sample of 20 of the 300 rows
def test_kmeans_does_not_depend_on_row_order(cap):
    # no cluster structure: where K-means ends up depends on where it starts, so an
    # order-dependent start (the reference's first K rows) would show here
    points = np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32)
    keys = [f"img_{i:04d}.jpg" for i in range(len(points))]
    shuffle = np.random.default_rng(7).permutation(len(points))
    first = kmeans_centers(points, k=5, seed=0, keys=keys, max_points_per_centroid=cap)
    again = kmeans_centers(
        points[shuffle], k=5, seed=0, keys=[keys[i] for i in shuffle], max_points_per_centroid=cap
    )
    np.testing.assert_array_equal(first, again)
    unkeyed = kmeans_centers(points[shuffle], k=5, seed=0, max_points_per_centroid=cap)
    assert not np.allclose(first, unkeyed, atol=1e-3)  # the keys are what makes them equal


def test_kmeans_reads_a_memmap_sample(tmp_path):
    points, truth = planted_clusters(seed=2, per_cluster=300)
    stored = np.lib.format.open_memmap(tmp_path / "ood.npy", "w+", np.float32, points.shape)
    stored[:] = points
    stored.flush()
    centers = kmeans_centers(
        np.load(tmp_path / "ood.npy", mmap_mode="r"), k=3, max_points_per_centroid=50
    )
    # trained on 150 of 900 rows: close to, not exactly, the full cluster means
    np.testing.assert_allclose(centers, truth[np.lexsort(truth.T[::-1])], atol=0.2)


def test_kmeans_rejects_too_few_rows_and_repeated_keys():
    points, _ = planted_clusters()
    with pytest.raises(ValueError, match="at least 200 OoD images, got 120"):
        kmeans_centers(points, k=200)
    keys = ["a"] * 2 + [str(i) for i in range(len(points) - 2)]
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        kmeans_centers(points, k=3, keys=keys)


# ---- shared precision ----------------------------------------------------------------------


def test_shared_precision_equals_hand_computation():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(6, 4))
    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 1], [1, 0], [1, 1]])
    prototypes = class_prototypes(features, labels).astype(np.float64)
    residuals = [features[i] - prototypes[c] for i in range(6) for c in range(2) if labels[i, c]]
    sigma = sum(np.outer(r, r) for r in residuals) / len(residuals)
    shrunk = 0.7 * sigma + 0.3 * np.trace(sigma) / 4 * np.eye(4)
    precision = shared_precision(features, labels, prototypes, shrinkage=0.3)
    np.testing.assert_allclose(precision, np.linalg.inv(shrunk), rtol=1e-5)
    np.testing.assert_allclose(precision, precision.T)


def test_shared_precision_with_fewer_samples_than_dimensions_and_ood_pooling():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(5, 16))
    labels = np.eye(5, dtype=np.int64)[:, :2].copy()
    labels[2:, 0] = 1
    prototypes = class_prototypes(features, labels)
    precision = shared_precision(features, labels, prototypes)
    assert np.all(np.linalg.eigvalsh(precision.astype(np.float64)) > 0)
    ood_centers = np.stack([np.full(16, 5.0), np.full(16, -5.0)])
    ood = ood_centers[[0, 1, 1]] + 0.01 * rng.normal(size=(3, 16))
    pooled = shared_precision(
        features, labels, prototypes, ood_features=ood, ood_centers=ood_centers
    )
    # residuals to the nearest centre are tiny: pooling them shrinks the covariance, so the
    # precision grows
    assert np.trace(pooled) > np.trace(precision)
    with pytest.raises(ValueError, match="singular"):
        shared_precision(np.ones((3, 2)), np.ones((3, 1)), np.ones((1, 2)))


# ---- images and feature extraction ---------------------------------------------------------


@pytest.fixture
def image_files(tmp_path):
    rng = np.random.default_rng(5)
    paths = []
    for i, (h, w) in enumerate([(20, 40), (32, 32), (50, 25), (16, 16), (64, 48)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_feature_image_dataset_resizes_long_side_and_pads(image_files):
    dataset = FeatureImageDataset(image_files, size=SIZE)
    tensor, index = dataset[0]  # 20 x 40 -> 16 x 32, centred: rows 8..24
    assert tensor.shape == (3, SIZE, SIZE) and index == 0
    assert torch.all(tensor[:, :8] == 0) and torch.all(tensor[:, 24:] == 0)
    resized = np.asarray(Image.open(image_files[0]).convert("RGB").resize((32, 16), Image.BILINEAR))
    torch.testing.assert_close(tensor[:, 8:24], normalize_image(resized))
    tensor, _ = dataset[1]  # already 32 x 32: unchanged
    torch.testing.assert_close(tensor, normalize_image(np.asarray(Image.open(image_files[1]))))


def test_feature_image_dataset_names_a_corrupt_file(tmp_path, image_files):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        FeatureImageDataset([image_files[0], bad], size=SIZE)[1]


def tiny_model():
    torch.manual_seed(0)
    return build_cam_net("resnet18", num_classes=3, output_stride=16, frozen_bn=False)


def test_memmap_streaming_equals_in_memory_extraction(tmp_path, image_files):
    model = tiny_model().train()  # trainable BN: eval mode matters for the features
    dataset = FeatureImageDataset(image_files, size=SIZE)
    model.eval()
    with torch.no_grad():
        direct = model.forward_features(torch.stack([dataset[i][0] for i in range(5)]))[1].numpy()
    model.train()
    in_memory = extract_features(model, feature_loader(image_files, size=SIZE, batch_size=3))
    shuffled = DataLoader(
        dataset, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    streamed = extract_features(model, shuffled, out_path=tmp_path / "feats" / "ood.npy")
    assert model.training  # mode restored
    assert isinstance(streamed, np.memmap) and not streamed.flags.writeable
    assert streamed.shape == (5, model.feature_dim) and streamed.dtype == np.float32
    np.testing.assert_allclose(in_memory, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(streamed, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "feats" / "ood.npy"), streamed)
    assert sorted(p.name for p in (tmp_path / "feats").iterdir()) == ["ood.npy"]


def test_extract_features_refuses_an_incomplete_loader(tmp_path, image_files):
    model = tiny_model()
    loader = DataLoader(FeatureImageDataset(image_files, size=SIZE), batch_size=2, drop_last=True)
    with pytest.raises(ValueError, match="1 of 5 images never"):
        extract_features(model, loader, out_path=tmp_path / "f.npy")
    assert list(tmp_path.glob("f.npy*")) == []  # nothing half-written
