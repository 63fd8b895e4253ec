"""What is known of the built-in datasets of the source registry (pipeline/data/sources.py, `SOURCES`) before
prepare runs, keyed like SOURCES.

A module of its own, importing nothing: pipeline/params_rules.py reads it to check params, and importing
sources.py there would load numpy with every `pipeline.config` import and make every stage's code deps
(pipeline/deps.py) include the data loaders.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    """Image side in pixels, channels, train images, classes; None where unknown before prepare."""

    side: int
    channels: int
    train: int | None
    classes: int | None


# an imagefolder tree is RGB with data.image_size and unknown counts (config check reads the data card once prepare
# wrote it), so it has no entry here
FACTS: dict[str, DatasetFacts] = {
    "fashion_mnist": DatasetFacts(28, 1, 60000, 10),
    "digits": DatasetFacts(8, 1, 1437, 10),
    "cifar10": DatasetFacts(32, 3, 50000, 10),
    "cifar100": DatasetFacts(32, 3, 50000, 100),
}
