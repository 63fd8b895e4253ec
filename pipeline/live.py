"""The stages' DVCLive logger, or a no-op stand-in where dvclive is not installed (a bare GPU machine).

Training curves also go to the plot CSVs and metrics.json, so a run without DVCLive loses only the live view.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class NoLive:
    """The part of dvclive.Live the stages call (log_metric, next_step, end, with-block), doing nothing."""

    def log_metric(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def next_step(self) -> None:
        pass

    def end(self) -> None:
        pass

    def __enter__(self) -> NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


def live_logger(dir: str, resume: bool) -> Any:
    """dvclive.Live writing to `dir` (neither editing dvc.yaml nor saving a DVC experiment, which Live's defaults do
    outside dvc repro: iterative/dvclive src/dvclive/live.py; docs/design.md), or a `NoLive` with one warning line
    (logged) when dvclive cannot be imported."""
    try:
        from dvclive import Live
    except ImportError:
        # a warning reaches stderr under the stages' logging set-up and, without one, through logging's last resort
        log.warning("dvclive is not installed: no live metrics in %s (the curves still go to results/plots)", dir)
        return NoLive()
    return Live(dir=dir, resume=resume, dvcyaml=False, save_dvc_exp=False, report=None)
