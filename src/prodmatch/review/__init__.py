"""Review and teach: a local page that walks a person through the pairs a label would teach the most, records
the labels atomically, and lets ``prodmatch train --labels`` learn from them."""

from prodmatch.feedback import decided_pairs
from prodmatch.review.labels import LabelBook
from prodmatch.review.session import QUEUES, Review

__all__ = ["QUEUES", "LabelBook", "Review", "decided_pairs"]
