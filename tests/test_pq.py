"""The plain PQ codec, the default compact codec of a large set: round trip, determinism and
persistence, real code sizes, typed errors on bad bytes, and its accuracy against Kakeya-PQ."""

import numpy as np
import pytest

from ams.errors import NotTrained, StoreCorrupted
from ams.kakeya import KakeyaCodec, PQCodec, ProductQuantizer, canonical_axis, load_codec


def anisotropic(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) / np.arange(1, d + 1) ** 0.5) @ basis.T + 0.3


@pytest.mark.parametrize("d,m", [(96, 24), (50, 7), (33, 33)])  # m dividing d, not dividing it, m = d
def test_round_trip_error_bound_and_code_size(d, m):
    x = anisotropic(3000, d, seed=0)
    codec = PQCodec(d, pq_bytes=m).train(x[:2500])
    codes = codec.encode(x[2500:])
    assert codes.dtype == np.uint8 and codes.shape == (500, m) and codec.code_size == m
    err = np.median(np.linalg.norm(codec.decode(codes) - x[2500:], axis=1) / np.linalg.norm(x[2500:], axis=1))
    # the same bytes as PCA truncation: the top m / 2 principal coordinates in fp16
    mean = x[:2500].mean(0)
    vt = np.linalg.svd(x[:2500] - mean, full_matrices=False)[2][: m // 2]
    pca = (x[2500:] - mean) @ vt.T @ vt + mean
    pca_err = np.median(np.linalg.norm(pca - x[2500:], axis=1) / np.linalg.norm(x[2500:], axis=1))
    assert err < pca_err
    assert m < d or err < 0.05  # one byte a coordinate: close to exact


def test_codes_are_deterministic_and_survive_save_load():
    x = anisotropic(1500, 64, seed=1)
    codec = PQCodec(64, pq_bytes=16, seed=3).train(x[:1200])
    codes = codec.encode(x[1200:])
    assert np.array_equal(codes, codec.encode(x[1200:]))
    assert np.array_equal(codes, PQCodec(64, pq_bytes=16, seed=3).train(x[:1200]).encode(x[1200:]))
    loaded = load_codec("pq", codec.to_bytes())
    assert isinstance(loaded, PQCodec) and np.array_equal(codes, loaded.encode(x[1200:]))
    np.testing.assert_array_equal(codec.decode(codes), loaded.decode(codes))


def test_decoding_sums_the_named_centroids():
    """The gathered decode equals the definition: mean + each sub-quantiser's centroid at its coordinates."""
    x = anisotropic(800, 20, seed=2)
    codec = PQCodec(20, pq_bytes=6).train(x)
    codes = codec.encode(x[:5])
    want = np.tile(codec.mean, (5, 1))
    ds = codec.pq.ds
    for j in range(6):
        for i in range(ds):
            if j + i * 6 < 20:
                want[:, j + i * 6] += codec.pq.centroids[j, codes[:, j], i]
    np.testing.assert_allclose(codec.decode(codes), want, rtol=1e-6, atol=1e-6)


def test_beats_kakeya_pq_at_equal_bytes_on_anisotropic_vectors():
    """Kakeya-PQ spends 6 of its bytes on a coarse part; plain PQ spends them on sub-quantisers."""
    x = anisotropic(4000, 96, seed=4)
    xt, xs = x[:3500], x[3500:]
    pq = PQCodec(96, pq_bytes=24).train(xt)
    kakeya = KakeyaCodec(96, pq_bytes=18).train(xt, axis=canonical_axis(xt))
    assert pq.code_size == kakeya.code_size == 24

    def err(c):
        return np.median(np.linalg.norm(c.decode(c.encode(xs)) - xs, axis=1) / np.linalg.norm(xs, axis=1))
    assert err(pq) < err(kakeya)


def test_using_a_codec_before_train_raises():
    with pytest.raises(NotTrained):
        PQCodec(8, pq_bytes=4).encode(np.zeros((1, 8)))
    with pytest.raises(NotTrained):
        PQCodec(8, pq_bytes=4).decode(np.zeros((1, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        PQCodec(8, pq_bytes=9)
    with pytest.raises(ValueError):
        PQCodec(8, pq_bytes=4).train(np.zeros((1, 8)))


def test_bad_codec_bytes_and_kinds_raise_store_corrupted():
    codec = PQCodec(16, pq_bytes=4).train(anisotropic(600, 16, seed=5))
    data = codec.to_bytes()
    for bad in (b"not safetensors", data[: len(data) // 2], KakeyaCodec(16).train(anisotropic(50, 16, seed=6)).to_bytes()):
        with pytest.raises(StoreCorrupted):
            load_codec("pq", bad)
    with pytest.raises(StoreCorrupted, match="unknown kind"):
        load_codec("opq", data)
    with pytest.raises(StoreCorrupted):
        load_codec("kakeya", data)  # PQ bytes read as a Kakeya codec
    with pytest.raises(StoreCorrupted):
        ProductQuantizer.from_centroids(16, np.zeros((4, 256, 3), dtype=np.float32))  # ds is 4 for d = 16, m = 4


@pytest.mark.parametrize("codec", [PQCodec(50, pq_bytes=7), KakeyaCodec(50, pq_bytes=13), KakeyaCodec(50)])
def test_decoding_into_a_given_array_and_in_chunks_gives_the_same_vectors(codec, monkeypatch):
    """`decode(codes, out=)` writes what `decode(codes)` returns, and the PQ part decoded a chunk
    of rows at a time (`DECODE_ROWS`) gives the same vectors as in one chunk."""
    from ams.kakeya import pq

    x = anisotropic(3000, 50, seed=4)
    codes = codec.train(x[:2000]).encode(x[2000:])
    one_chunk = codec.decode(codes)  # 1,000 rows < DECODE_ROWS
    monkeypatch.setattr(pq, "DECODE_ROWS", 96)  # ten full chunks and a partial one
    whole = codec.decode(codes)
    assert np.array_equal(whole, one_chunk)
    out = np.full((1000, 50), np.nan, dtype=np.float32)
    assert codec.decode(codes, out=out) is out and np.array_equal(out, whole)
    with pytest.raises(ValueError, match="out must be"):
        codec.decode(codes, out=np.empty((999, 50), dtype=np.float32))
