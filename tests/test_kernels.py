"""The compiled pair kernels against plain references on random sparse rows, and the same value for a pair in
any batch."""

import numpy as np
import pytest
import scipy.sparse as sp

from prodmatch import kernels


def _csr(rng, n=40, width=60, density=0.15, dtype=np.float32) -> sp.csr_matrix:
    m = sp.random(n, width, density, format="csr", dtype=dtype, random_state=rng)
    m.data = (m.data + 0.1).astype(dtype)
    m.sum_duplicates()
    return m


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_rows_dot_matches_dense_products(rng):
    m, n = _csr(rng), _csr(rng)
    a, b = rng.integers(0, 40, 300), rng.integers(0, 40, 300)
    want = (m.toarray().astype(np.float64)[a] * n.toarray().astype(np.float64)[b]).sum(1)
    np.testing.assert_allclose(kernels.rows_dot(m, n, a, b), want, rtol=1e-12)
    empty = sp.csr_matrix((40, 60), dtype=np.float32)
    assert (kernels.rows_dot(m, empty, a, b) == 0).all()


def test_rows_contain(rng):
    m = _csr(rng)
    rows, cols = rng.integers(0, 40, 500), rng.integers(-3, 60, 500)
    dense = m.toarray() != 0
    want = np.array([c >= 0 and dense[r, c] for r, c in zip(rows, cols, strict=True)])
    assert (kernels.rows_contain(m, rows, cols) == want).all()


def test_blocks_shared_sums_each_kind_per_block(rng):
    m = _csr(rng, width=30, density=0.4)
    starts, kinds = np.array([0, 10, 10, 20]), np.array([kernels.DOT, kernels.LEFT, kernels.DOT, kernels.RATIO])
    a, b = rng.integers(0, 40, 200), rng.integers(0, 40, 200)
    sums, counts, low = kernels.blocks_shared(m, starts, kinds, a, b)
    d = m.toarray().astype(np.float64)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        both = (d[x] != 0) & (d[y] != 0)
        blocks = [(0, 10, d[x] * d[y]), (10, 10, None), (10, 20, d[x] * d[y]), (20, 30, np.exp(-np.abs(d[x] - d[y])))]
        for j, (lo, hi, value) in enumerate(blocks):
            if value is None:  # an empty block (its start equals the next one's) never receives an entry
                assert sums[i, j] == counts[i, j] == 0
                continue
            assert counts[i, j] == both[lo:hi].sum()
            assert sums[i, j] == pytest.approx(value[lo:hi][both[lo:hi]].sum(), rel=1e-12)
        ratios = np.exp(-np.abs(d[x] - d[y]))[20:30][both[20:30]]
        assert low[i] == pytest.approx(ratios.min() if len(ratios) else 1.0)


def test_best_words_soft_tfidf_and_monge_elkan(rng):
    tfidf = _csr(rng, n=30, width=20, density=0.2)
    near = _csr(rng, n=20, width=20, density=0.1)
    near.setdiag(0)
    near.eliminate_zeros()
    near.data = np.minimum(near.data, 0.99).astype(np.float32)
    x, y = rng.integers(0, 30, 100), rng.integers(0, 30, 100)
    soft, monge, count = kernels.best_words(tfidf, near, x, y)
    t, nd = tfidf.toarray().astype(np.float64), near.toarray().astype(np.float64)
    for i, (p, q) in enumerate(zip(x, y, strict=True)):
        words = np.flatnonzero(t[p])
        best = [max([1.0 * (t[q, w] > 0)] + [nd[w, o] for o in np.flatnonzero(t[q]) if nd[w, o] > 0]) for w in words]
        weighted = [max([t[q, w]] + [nd[w, o] * t[q, o] for o in np.flatnonzero(t[q]) if nd[w, o] > 0]) for w in words]
        assert count[i] == len(words)
        assert soft[i] == pytest.approx(float(np.dot(t[p, words], weighted)), rel=1e-12)
        if len(words):
            assert monge[i] == pytest.approx(np.mean(best), rel=1e-12)
        else:
            assert np.isnan(monge[i])


def test_dims_compared_counts_agreeing_and_conflicting_dimensions():
    buckets, dims = 10, 3
    # item 0: dim 0 bucket 4, dim 1 bucket 2; item 1: dim 0 bucket 5 (near 4), dim 1 bucket 7 (far);
    # item 2: dim 0 buckets 4 and 8 (a bundle against item 0), dim 2 bucket 1
    exact_cols = [[4, 12], [5, 17], [4, 8, 21]]
    rows = np.repeat(np.arange(3), [len(c) for c in exact_cols])
    cols = np.concatenate(exact_cols)
    exact = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(3, dims * buckets))
    wide_rows, wide_cols = np.repeat(rows, 3), (cols[:, None] + np.array([-1, 0, 1])).ravel()
    wide = sp.csr_matrix((np.ones(len(wide_cols), np.float32), (wide_rows, wide_cols)), shape=(3, dims * buckets))
    wide.sum_duplicates()
    agree, conflicts = kernels.dims_compared(exact, wide, np.array([0, 0, 2]), np.array([1, 2, 0]), buckets, dims)
    assert agree.tolist() == [1, 1, 1]  # dimension 0 agrees in each pair
    assert conflicts.tolist() == [1, 0, 0]  # 0 vs 1: dimension 1 conflicts; 0 vs 2: a bundle, not a conflict


def test_a_pair_takes_the_same_value_in_any_batch(rng):
    m = _csr(rng)
    a, b = rng.integers(0, 40, 257), rng.integers(0, 40, 257)
    whole = kernels.rows_dot(m, m, a, b)
    alone = np.array([kernels.rows_dot(m, m, a[i : i + 1], b[i : i + 1])[0] for i in range(len(a))])
    assert (whole == alone).all()
    sums, *_ = kernels.blocks_shared(m, np.array([0, 30]), np.array([kernels.DOT, kernels.RATIO]), a, b)
    one, *_ = kernels.blocks_shared(m, np.array([0, 30]), np.array([kernels.DOT, kernels.RATIO]), a[5:6], b[5:6])
    assert (sums[5] == one[0]).all()


def test_a_kernel_compiles_where_numba_cannot_cache_it(caplog):
    scope: dict = {}
    exec("def twice(x):\n    return 2 * x\n", scope)  # no source file: numba has nowhere to cache it
    with caplog.at_level("INFO", logger="prodmatch.kernels"):
        twice = kernels._compiled(scope["twice"])
    assert twice(21) == 42
    assert "not cached" in caplog.text
