"""Routing: rules, a learned classifier, and a judge model only when unsure."""

from .classifier import SoftmaxClassifier
from .features import Featurizer, HashedBagOfWords
from .policy import LABELS, RouteDecision, Router
from .rules import RuleHit, apply_rules
from .training import TrainReport, bundled_examples, load_classifier, load_examples, train

__all__ = [
    "LABELS",
    "Featurizer",
    "HashedBagOfWords",
    "RouteDecision",
    "Router",
    "RuleHit",
    "SoftmaxClassifier",
    "TrainReport",
    "apply_rules",
    "bundled_examples",
    "load_classifier",
    "load_examples",
    "train",
]
