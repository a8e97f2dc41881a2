import numpy as np
import pytest

from ams.config import KakeyaConfig
from ams.errors import NotTrained, StoreCorrupted
from ams.kakeya import KakeyaCodec, KakeyaRegistry, SphericalKMeans, canonical_axis, default_sets


def anisotropic(n: int, d: int, seed: int) -> np.ndarray:
    """Vectors with a decaying spectrum and a shared mean, like pooled LM states."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).normal(size=(d, d)))[0]
    spectrum = 1.0 / np.arange(1, d + 1) ** 0.7
    return (rng.normal(size=(n, d)) * spectrum) @ basis.T + 0.3


@pytest.mark.parametrize("d,n_train", [(48, 64), (96, 500), (33, 40)])
def test_round_trip_error_bound_on_unseen_vectors(d, n_train):
    x = anisotropic(n_train + 200, d, seed=0)
    codec = KakeyaCodec(d).train(x[:n_train])
    unseen = x[n_train:]
    err = np.linalg.norm(codec.decode(codec.encode(unseen)) - unseen, axis=1) / np.linalg.norm(unseen, axis=1)
    assert np.median(err) <= 0.15
    assert np.median(err) < 0.05  # int8 residual: far inside the bound


def test_codes_are_deterministic_and_survive_save_load():
    x = anisotropic(300, 64, seed=1)
    codec = KakeyaCodec(64, seed=3).train(x[:200])
    codes = codec.encode(x[200:])
    assert np.array_equal(codes, codec.encode(x[200:]))
    again = KakeyaCodec(64, seed=3).train(x[:200])
    assert np.array_equal(codes, again.encode(x[200:]))
    loaded = KakeyaCodec.from_bytes(codec.to_bytes())
    assert np.array_equal(codes, loaded.encode(x[200:]))
    np.testing.assert_array_equal(codec.decode(codes), loaded.decode(codes))


def test_code_size_is_the_real_bytes():
    codec = KakeyaCodec(40).train(anisotropic(100, 40, seed=2))
    codes = codec.encode(anisotropic(7, 40, seed=5))
    assert codes.dtype == np.uint8 and codes.shape == (7, codec.code_size)
    assert codes.nbytes == 7 * codec.code_size == 7 * (40 + 8)


def test_using_a_codec_before_train_raises():
    with pytest.raises(NotTrained):
        KakeyaCodec(8).encode(np.zeros((1, 8)))
    with pytest.raises(NotTrained):
        KakeyaCodec(8).decode(np.zeros((1, 16), dtype=np.uint8))


def test_t_dir_follows_the_bundle_axis():
    x = anisotropic(400, 32, seed=4)
    axis = canonical_axis(x)
    codec = KakeyaCodec(32).train(x, axis=axis)
    image = codec.rotation @ axis
    image[codec.rank:] = 0
    np.testing.assert_allclose(codec.t_dir, image / np.linalg.norm(image), atol=1e-5)
    assert abs(codec.t_dir @ codec.centres.T).max() < 1e-5  # segments are perpendicular to t_dir


def test_corrupted_codes_and_codec_bytes_raise_typed_errors():
    codec = KakeyaCodec(16, n_segments=4).train(anisotropic(50, 16, seed=6))
    codes = codec.encode(anisotropic(3, 16, seed=7))
    codes[:, 6:8] = 255  # segment id 65535
    with pytest.raises(StoreCorrupted):
        codec.decode(codes)
    with pytest.raises(StoreCorrupted):
        KakeyaCodec.from_bytes(b"not safetensors")


def test_registry_trains_at_min_entries_and_versions_on_growth():
    reg = KakeyaRegistry(default_sets(16, 24), KakeyaConfig(min_entries=64, growth=4))
    assert reg.encode("content", np.zeros((1, 16))) is None and not reg.due("sentence", 63)
    assert reg.due("sentence", 64)
    v1 = reg.train("sentence", anisotropic(64, 16, seed=8))
    assert v1 == 1 and not reg.due("sentence", 255) and reg.due("sentence", 256)
    v2 = reg.train("sentence", anisotropic(256, 16, seed=9))
    version, codes = reg.encode("context", anisotropic(2, 16, seed=10))
    assert version == v2 == 2
    assert reg.decode("context", 2, codes).shape == (2, 16)
    assert reg.decode("content", 1, reg.codec("sentence", 1).encode(np.ones((1, 16)))).shape == (1, 16)


def test_spherical_kmeans_assigns_to_the_nearest_centroid():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8)
    x = np.repeat(centres, 25, axis=0) + rng.normal(scale=0.05, size=(100, 8))
    km = SphericalKMeans(4, seed=0).train(x)
    _, assign = km.assign(x)
    for c in range(4):  # each true cluster maps to one centroid
        assert len(set(assign[c * 25 : (c + 1) * 25])) == 1
    assert len(set(assign)) == 4


@pytest.mark.parametrize("kind", ["pq", "kakeya-pq"])
def test_registry_switches_to_a_compact_codec_once_a_set_is_large(kind):
    cfg = KakeyaConfig(min_entries=64, growth=4, pq_min_train=1024, codec=kind,
                       pq_bytes={"sentence": 14, "hidden": 18})
    reg = KakeyaRegistry(default_sets(32, 48), cfg)
    reg.train("sentence", anisotropic(256, 32, seed=11))
    assert reg.codec("sentence", 1).code_size == 32 + 8  # small set: Kakeya's dense int8 residual
    reg.train("sentence", anisotropic(1024, 32, seed=12))
    compact = reg.codec("sentence", 2)
    assert compact.code_size == 14 and compact.kind == ("pq" if kind == "pq" else "kakeya")
    assert compact.pq_bytes == (14 if kind == "pq" else 14 - 6)  # kakeya-pq: 6 bytes of coarse part
    reg.train("hidden", anisotropic(1100, 48, seed=13))
    assert reg.codec("hidden", 1).code_size == 18
    x = anisotropic(50, 32, seed=14)
    version, codes = reg.encode("content", x)
    assert version == 2 and codes.shape == (50, 14)
    err = np.linalg.norm(reg.decode("content", 2, codes) - x, axis=1) / np.linalg.norm(x, axis=1)
    assert np.median(err) < 0.3
    assert reg.decode("content", 1, reg.codec("sentence", 1).encode(x)).shape == (50, 32)  # old rows still decode
    again = KakeyaRegistry(default_sets(32, 48), cfg)
    again.load("sentence", 2, 1024, compact.kind, compact.to_bytes())
    np.testing.assert_array_equal(again.decode("content", 2, codes), reg.decode("content", 2, codes))


def test_pq_bytes_config_is_validated():
    with pytest.raises(ValueError):
        KakeyaConfig(pq_bytes={"sentence": 0})
    with pytest.raises(ValueError, match="coarse part"):  # nothing left for kakeya-pq's sub-quantisers
        KakeyaConfig(codec="kakeya-pq", pq_bytes={"sentence": 6})
    with pytest.raises(ValueError):
        KakeyaConfig(codec="opq")


def test_spherical_kmeans_random_init_also_separates_clusters():
    rng = np.random.default_rng(1)
    x = np.repeat(np.eye(4, 8), 25, axis=0) + rng.normal(scale=0.05, size=(100, 8))
    _, assign = SphericalKMeans(4, seed=0, init="random").train(x).assign(x)
    assert len(set(assign)) >= 3  # random seeds may merge two clusters; k-means++ above must not
    with pytest.raises(ValueError):
        SphericalKMeans(4, init="farthest")
