"""Router accuracy on a held-out split of the bundled labels, and the decision overhead in µs.

    .venv/bin/python bench/bench_router.py

Held-out split: every 5th example of each label (deterministic). The classifier
is fitted on the other 4/5. "router" = the full policy (rules, then the
classifier; the judge is off here, as it calls a model).
"""

from __future__ import annotations

import statistics
import time

from keel.config import RouterSettings
from keel.router import HashedBagOfWords, Router, bundled_examples
from keel.router.classifier import SoftmaxClassifier
from keel.router.training import accuracy, split


def main() -> None:
    featurizer = HashedBagOfWords()
    examples = bundled_examples()
    train_set, held = split(examples)
    model = SoftmaxClassifier.fit(featurizer.embed([t for t, _ in train_set]), [label for _, label in train_set])
    router = Router(model, featurizer, RouterSettings(judge=False))
    decisions = [(router.decide(text), label) for text, label in held]
    routed_ok = sum(d.label == label for d, label in decisions)
    print(f"examples: {len(examples)} (train {len(train_set)}, held out {len(held)})")
    print(f"classifier alone, held-out accuracy: {accuracy(model, featurizer, held):.1%}")
    print(f"router (rules + classifier), held-out accuracy: {routed_ok / len(held):.1%}")
    stages = statistics.multimode(d.stage for d, _ in decisions)
    print(
        f"stages used: {dict((s, sum(d.stage == s for d, _ in decisions)) for s in ('rule', 'classifier'))}"
        f" (most: {stages})"
    )
    for label in ("agent", "chat", "kb"):
        rows = [(d, g) for d, g in decisions if g == label]
        print(f"  {label:5s}: {sum(d.label == g for d, g in rows)}/{len(rows)}")
    timings: dict[str, list[float]] = {"rule": [], "classifier": []}
    for _ in range(30):
        for text, _label in held:
            started = time.perf_counter()
            d = router.decide(text)
            timings[d.stage].append((time.perf_counter() - started) * 1e6)
    for stage, values in timings.items():
        values.sort()
        print(
            f"decision overhead, {stage}: median {statistics.median(values):.1f} µs, "
            f"p95 {values[int(len(values) * 0.95)]:.1f} µs (n={len(values)})"
        )


if __name__ == "__main__":
    main()
