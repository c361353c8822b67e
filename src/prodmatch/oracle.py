"""The Bayes-optimal score of any pair of synthetic items: the ceiling every model and catalogue figure is set
against.

:func:`prodmatch.synth.generate` knows its own latent model, so for any two items it can compute the
posterior log-odds that they are one product, from everything a model can observe (see
:meth:`Oracle.log_odds`). It saves what that needs, per item, to ``oracle_items.npz`` beside the data, so the
oracle can score pairs that were never labelled: a catalogue's candidate pairs, or every item of a category
against a query (:meth:`Oracle.top_k`).

The prior over the pair kinds (same product, sibling, same category, other category) is the one thing that
depends on how the pairs were chosen:

- ``"labelled"``: the kinds' shares among the labelled training pairs, as drawn. This is the oracle of
  ``oracle.parquet``.
- ``"catalogue"``: the kinds' shares among all pairs of distinct items. Candidate search picks pairs by what
  the items show, and selecting on observables does not change the posterior given them, so this prior gives
  the Bayes posterior of a catalogue's candidate pairs too, whatever search found them: its probabilities are
  calibrated there, and its ranking is the best possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.atomic import atomic_path
from prodmatch.errors import DataError
from prodmatch.io import ORACLE_ITEMS_FILE

__all__ = ["KINDS", "ORACLE_ITEMS_FILE", "Oracle", "catalogue_kind_shares"]


# The kinds of pair the oracle weighs against each other, by the truth of the two items.
KINDS = ("same product", "sibling", "same category", "other category")


@dataclass
class Oracle:
    """Per-item evidence and the generator's parameters; rows in generation order.

    Attributes:
        variantid: (N,) the items' ids.
        cat2: (N,) level-2 category (observable in attributes.parquet).
        d: per modality, (N, r) float32: the listing's latent observation (main vector and extra photos,
            averaged) minus its category's centre.
        var: per modality, (N,) the variance of that observation's noise.
        ok: per modality, (N,) whether the item shows the modality at all.
        f2, s2: the family and sibling variances of the latent model.
        brand, model: (N,) codes, the same within a family (observable in names and attributes) or -1 if the
            files show neither; ``p_equal_brand``, ``p_equal_model``: the chance two families agree.
        colour: (N,) code of the product's colour; ``colour_seen``: whether the files show it for the item.
        p_same_colour: the chance two products have one colour.
        prior_labelled, prior_catalogue: (4,) shares of :data:`KINDS`.
    """

    variantid: np.ndarray
    cat2: np.ndarray
    d: tuple[np.ndarray, ...]
    var: tuple[np.ndarray, ...]
    ok: tuple[np.ndarray, ...]
    f2: float
    s2: float
    brand: np.ndarray
    model: np.ndarray
    p_equal_brand: float
    p_equal_model: float
    colour: np.ndarray
    colour_seen: np.ndarray
    p_same_colour: float
    prior_labelled: np.ndarray
    prior_catalogue: np.ndarray
    chunk: int = 1 << 20  # pairs scored at a time

    def __len__(self) -> int:
        return len(self.variantid)

    # ------------------------------------------------------------------------------------------ io

    def save(self, path: str | Path) -> None:
        """Write to ``path`` (an .npz), atomically."""
        arrays = {
            "variantid": self.variantid,
            "cat2": self.cat2,
            "brand": self.brand,
            "model": self.model,
            "colour": self.colour,
            "colour_seen": self.colour_seen,
            "prior_labelled": self.prior_labelled,
            "prior_catalogue": self.prior_catalogue,
            "scalars": np.array([self.f2, self.s2, self.p_equal_brand, self.p_equal_model, self.p_same_colour]),
        }
        for m, (d, var, ok) in enumerate(zip(self.d, self.var, self.ok, strict=True)):
            arrays |= {f"d{m}": d, f"var{m}": var, f"ok{m}": ok}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, data_dir: str | Path) -> Oracle:
        """The oracle of a synthetic data directory (DataError if it has none)."""
        path = Path(data_dir) / ORACLE_ITEMS_FILE
        if not path.exists():
            raise DataError(f"{path} not found: only data written by `prodmatch synth` has an oracle")
        z = np.load(path, allow_pickle=False)
        n_mod = sum(1 for key in z.files if key.startswith("d") and key[1:].isdigit())
        f2, s2, p_brand, p_model, p_colour = (float(x) for x in z["scalars"])
        return cls(
            variantid=z["variantid"],
            cat2=z["cat2"],
            d=tuple(z[f"d{m}"] for m in range(n_mod)),
            var=tuple(z[f"var{m}"] for m in range(n_mod)),
            ok=tuple(z[f"ok{m}"] for m in range(n_mod)),
            f2=f2,
            s2=s2,
            brand=z["brand"],
            model=z["model"],
            p_equal_brand=p_brand,
            p_equal_model=p_model,
            colour=z["colour"],
            colour_seen=z["colour_seen"],
            p_same_colour=p_colour,
            prior_labelled=z["prior_labelled"],
            prior_catalogue=z["prior_catalogue"],
        )

    def rows(self, ids) -> np.ndarray:
        """(M,) oracle rows of the given variant ids (DataError naming one that is unknown)."""
        rows = pd.Index(self.variantid).get_indexer(np.asarray(ids))
        if (rows < 0).any():
            bad = np.asarray(ids)[rows < 0][0]
            raise DataError(f"variantid {bad!r} is not in {ORACLE_ITEMS_FILE}: the oracle covers only its own data")
        return rows

    # ------------------------------------------------------------------------------------------ scores

    def prior(self, prior: str | np.ndarray) -> np.ndarray:
        if isinstance(prior, str):
            if prior not in ("labelled", "catalogue"):
                raise ValueError(f"prior must be 'labelled', 'catalogue' or an array, got {prior!r}")
            return self.prior_labelled if prior == "labelled" else self.prior_catalogue
        return np.asarray(prior, dtype=np.float64)

    def log_odds(self, left: np.ndarray, right: np.ndarray, prior: str | np.ndarray = "catalogue") -> np.ndarray:
        """Bayes-optimal log-odds that each pair of rows is one product, under the generator's latent model.

        The pair kinds are the hypotheses, each with its share under ``prior``, and a likelihood from every
        observable signal:

        - per modality, the listings' latent observations (main vector and extra photos, averaged, noise
          known) around the observed category's centre, which are jointly Gaussian with a cross-covariance
          of s_fam^2 + s_sib^2 (same product), s_fam^2 (siblings) or 0 (different families);
        - whether the level-2 categories are equal (always for the first three kinds, never for the last);
        - whether the brand and the model number are equal (always within a family, by chance across
          families);
        - whether the colours are equal, where both listings show one (always for one product, by chance
          otherwise).

        It ignores category levels 3 and 4, which add nothing once the model number is known, and label
        noise, which does not change the ranking. Pairs the evidence rules out (another category, model
        number or colour) are ordered by their embedding evidence below every other pair, near -1e4.
        """
        left, right = np.asarray(left), np.asarray(right)
        if len(left) > self.chunk:  # bounded memory: a few (chunk, r) float64 arrays at a time
            return np.concatenate(
                [
                    self.log_odds(left[s : s + self.chunk], right[s : s + self.chunk], prior)
                    for s in range(0, len(left), self.chunk)
                ]
            )
        same_cat = self.cat2[left] == self.cat2[right]
        ll = np.zeros((len(left), 4)) + np.log(self.prior(prior))
        ll[~same_cat, :3] = -np.inf
        ll[same_cat, 3] = -np.inf

        f2, s2 = self.f2, self.s2
        similarity = np.zeros(len(left))  # embedding evidence alone: same product against different families
        for d, var, ok in zip(self.d, self.var, self.ok, strict=True):
            use = same_cat & ok[left] & ok[right]
            da, db = d[left[use]].astype(np.float64), d[right[use]].astype(np.float64)
            saa, sbb, sab = (da * da).sum(1), (db * db).sum(1), (da * db).sum(1)
            va, vb = f2 + s2 + var[left[use]], f2 + s2 + var[right[use]]
            r = d.shape[1]
            for col, cov in ((0, f2 + s2), (1, f2), (2, 0.0), (3, 0.0)):
                det = va * vb - cov**2
                term = -0.5 * r * np.log(det) - 0.5 * (saa * vb - 2.0 * cov * sab + sbb * va) / det
                ll[use, col] += term
                similarity[use] += term if col == 0 else -term if col == 2 else 0.0

        for codes, p_equal in ((self.brand, self.p_equal_brand), (self.model, self.p_equal_model)):
            shown = (codes[left] >= 0) & (codes[right] >= 0)
            equal = codes[left] == codes[right]
            ll[shown & ~equal, :2] = -np.inf
            ll[shown, 2:] += np.where(equal[shown], np.log(p_equal), np.log1p(-p_equal))[:, None]

        both = self.colour_seen[left] & self.colour_seen[right]
        equal = self.colour[left] == self.colour[right]
        ll[both & ~equal, 0] = -np.inf
        p = self.p_same_colour
        ll[both, 1:] += np.where(equal[both], np.log(p), np.log1p(-p))[:, None]
        with np.errstate(invalid="ignore"):
            out = ll[:, 0] - np.logaddexp.reduce(ll[:, 1:], axis=1)
        # Ruled-out pairs would all tie at -inf, and a tied block scores as one PR-curve step: order them by
        # their embedding evidence, below every other pair.
        impossible = ~np.isfinite(out)
        out[impossible] = -1e4 + np.clip(similarity[impossible], -1e3, 1e3)
        return out

    def probability(self, left: np.ndarray, right: np.ndarray, prior: str | np.ndarray = "catalogue") -> np.ndarray:
        """The posterior probability that each pair is one product (see :meth:`log_odds`)."""
        from scipy.special import expit

        return expit(self.log_odds(left, right, prior))

    def top_k(self, queries: np.ndarray, k: int, chunk_pairs: int = 1 << 19) -> np.ndarray:
        """(Q, k) the rows the oracle ranks highest for each query row, among items of its level-2 category
        (the only ones it can match), best first; -1 where the category has fewer items."""
        queries = np.asarray(queries)
        out = np.full((len(queries), k), -1, dtype=np.int64)
        order = np.argsort(self.cat2, kind="stable")
        starts = np.searchsorted(self.cat2[order], np.arange(int(self.cat2.max()) + 2))
        for c in np.unique(self.cat2[queries]):
            members = order[starts[c] : starts[c + 1]]
            where = np.flatnonzero(self.cat2[queries] == c)
            step = max(1, chunk_pairs // max(len(members), 1))
            for s in range(0, len(where), step):
                qi = where[s : s + step]
                left = np.repeat(queries[qi], len(members))
                right = np.tile(members, len(qi))
                score = self.log_odds(left, right).reshape(len(qi), len(members))
                score[queries[qi][:, None] == members[None, :]] = -np.inf  # not itself
                kk = min(k, len(members) - 1)
                if kk <= 0:
                    continue
                best = np.argpartition(-score, kk - 1, axis=1)[:, :kk]
                best = np.take_along_axis(best, np.argsort(-np.take_along_axis(score, best, 1), axis=1), 1)
                out[qi, :kk] = members[best]
        return out


def catalogue_kind_shares(product: np.ndarray, fam: np.ndarray, cat2: np.ndarray) -> np.ndarray:
    """(4,) the share of each of :data:`KINDS` among all pairs of distinct items."""

    def pairs_within(group: np.ndarray) -> float:
        counts = np.unique(group, return_counts=True)[1].astype(np.float64)
        return float((counts * (counts - 1) / 2).sum())

    n = float(len(product))
    total = n * (n - 1) / 2
    same_product = pairs_within(product)
    same_family = pairs_within(fam)
    same_cat = pairs_within(cat2)
    counts = np.array([same_product, same_family - same_product, same_cat - same_family, total - same_cat])
    return np.maximum(counts, 1.0) / total
