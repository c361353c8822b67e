"""The learned word-pair model that ``gbdt`` stacks: a logistic regression over the words two names share and
the words only one of them has."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from prodmatch.catalogue import Catalogue
from prodmatch.sparse_text import hash_names, hash_words, rowwise_dot_pair

log = logging.getLogger(__name__)


@dataclass
class WordPairScorer:
    """A logistic regression over the words two names share and the words only one of them has.

    Fixed similarities weigh a shared word by its rarity (IDF); this learns from the labelled pairs which
    words decide a match (a model code, "kit", "refurbished") and which do not ("camera", a colour the
    sellers disagree on). Features of a pair, hashed words of the lowercased names: one indicator per word
    in both names, and one per word in exactly one of them (so symmetric in the two items). ``gbdt``
    cross-fits it like its stacked network and feeds its out-of-fold logit to the trees.
    """

    c: float = 1.0  # inverse regularisation strength
    coef: np.ndarray | None = None  # (4 * NAME_HASH_FEATURES,) float32
    intercept: float = 0.0
    _cache: tuple | None = field(default=None, repr=False)  # (catalogue, its hashed words over all items)

    def fit(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, target: np.ndarray) -> WordPairScorer:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        x = self.pair_matrix(catalogue, left, right)
        if len(np.unique(target)) < 2:  # one class only: no words to learn; the prior alone
            self.coef = np.zeros(x.shape[1], dtype=np.float32)
            rate = float(np.clip(np.mean(target), 1e-6, 1 - 1e-6))
            self.intercept = float(np.log(rate / (1 - rate)))
            return self
        # Fitted on the hashed columns the pairs use (a few percent of them): the solver's work grows with the
        # number of columns, and the unused ones would get a zero weight anyway (measured with liblinear: 6.2 s
        # to 2.2 s on 20,000 pairs, the same weights to 1e-3).
        used = np.unique(x.indices)
        local = np.full(x.shape[1], -1, dtype=np.int64)
        local[used] = np.arange(len(used))
        compact = sp.csr_matrix((x.data, local[x.indices], x.indptr), shape=(x.shape[0], len(used)))
        # L-BFGS: each iteration is two sparse products, so its cost grows with the pairs; liblinear's primal
        # Newton solver grew faster than that (20,000 / 45,000 pairs: 2.8 s / 11.9 s, against 3.7 s for
        # L-BFGS at 45,000, with the same held-out average precision, 0.8927 / 0.8928), and had not finished
        # after 12 minutes on the two 460,000-pair folds at E-CUP size (L-BFGS: 157 s for both).
        lr = LogisticRegression(C=self.c, solver="lbfgs", max_iter=200)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr.fit(compact, target)
        if lr.n_iter_[0] >= lr.max_iter:  # said once, in words, rather than scikit-learn's warning
            log.info(
                "word-pair model: L-BFGS stopped at %d iterations on %d pairs before its tolerance; its weights "
                "are used as they are (a ranking feature of the trees)",
                lr.max_iter,
                compact.shape[0],
            )
        self.coef = np.zeros(x.shape[1], dtype=np.float32)
        self.coef[used] = lr.coef_.ravel()
        self.intercept = float(lr.intercept_[0])
        return self

    def logits(
        self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, items: WordItems | None = None
    ) -> np.ndarray:
        """(M,) float32 logits; row by row in float64, so a pair's value does not depend on its batch.

        ``items``: the items' stored words (:meth:`item_data`), covering every item of the pairs; built for
        just those items when None.
        """
        if items is None:
            items = self.item_data(catalogue, np.union1d(left, right))
        return items.logits(left, right, self.intercept)

    def item_data(self, catalogue: Catalogue, items: np.ndarray | None = None) -> WordItems:
        """What the logits need of each of the sorted catalogue ``items`` (all by default), once per item.

        The logit is linear in indicators of the words in both names and in exactly one: with c_both and
        c_one their weights, sum(c_one over A xor B) = sum(c_one over A) + sum(c_one over B) - 2 sum(c_one over
        A and B). So each item keeps its tokens and sum(c_one) over them, and a pair costs one sparse dot
        product: its shared tokens weighted by c_both - 2 c_one.
        """
        items = np.arange(len(catalogue)) if items is None else items
        cached = self._cache
        tokens = (
            cached[1][items] if cached is not None and cached[0] is catalogue else _name_tokens(catalogue.names[items])
        )
        half = tokens.shape[1]
        coef = self.coef.astype(np.float64)
        both, one = coef[:half], coef[half:]
        shared = tokens.multiply((both - 2.0 * one)[None, :]).tocsr().astype(np.float64)
        tokens = tokens.tocsr()
        for m in (tokens, shared):
            m.sum_duplicates()  # canonical: sorted, unique columns per row, as rowwise_dot_pair needs
        return WordItems(items, tokens, shared, tokens @ one)

    def prepare(self, catalogue: Catalogue) -> WordPairScorer:
        """Hash every item's name once (a server's catalogue)."""
        self._cache = (catalogue, _name_tokens(catalogue.names))
        return self

    def pair_matrix(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray) -> sp.csr_matrix:
        """(M, 2 * 2 * NAME_HASH_FEATURES) 0/1: [tokens in both names | tokens in exactly one], tokens being
        the words and the character 3-grams (which see a code inside a longer word) of the names."""
        if self._cache is not None and self._cache[0] is catalogue:
            tokens, la, lb = self._cache[1], left, right
        else:
            items = np.union1d(left, right)
            tokens = _name_tokens(catalogue.names[items])
            la, lb = np.searchsorted(items, left), np.searchsorted(items, right)
        a, b = tokens[la], tokens[lb]
        both = a.multiply(b).tocsr()
        either = ((a + b) - 2 * both).tocsr()
        either.eliminate_zeros()
        out = sp.hstack([both, either], format="csr", dtype=np.float32)
        out.sum_duplicates()
        return out


@dataclass
class WordItems:
    """The word-pair model's per-item data (see :meth:`WordPairScorer.item_data`)."""

    items: np.ndarray  # sorted catalogue rows
    tokens: sp.csr_matrix  # (items, 2 * NAME_HASH_FEATURES) 0/1
    shared: sp.csr_matrix  # tokens weighted by c_both - 2 c_one, float64
    one: np.ndarray  # (items,) float64: sum of c_one over the item's tokens

    def logits(self, left: np.ndarray, right: np.ndarray, intercept: float) -> np.ndarray:
        la, lb = np.searchsorted(self.items, left), np.searchsorted(self.items, right)
        inter = rowwise_dot_pair(self.tokens, self.shared, la, lb, dtype=np.float64)
        return (intercept + self.one[la] + self.one[lb] + inter).astype(np.float32)


def _name_tokens(names: np.ndarray) -> sp.csr_matrix:
    """(N, 2 * NAME_HASH_FEATURES) 0/1: hashed words and word pairs, then hashed character 3-grams, of each name."""
    grams = hash_names(names)
    grams.data[:] = 1.0
    return sp.hstack([hash_words(names, ngrams=(1, 2)), grams], format="csr", dtype=np.float32)
