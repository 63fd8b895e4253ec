"""pipeline/live.py: DVCLive where it is installed, a no-op logger with one warning where it is not (the GPU
machine has no dvclive)."""
from __future__ import annotations

import logging
import sys

from pipeline.live import NoLive, live_logger


def test_live_logger__without_dvclive_is_a_silent_stand_in_that_warns_once(monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "dvclive", None)  # `import dvclive` now raises ImportError
    with caplog.at_level(logging.WARNING, logger="pipeline.live"):
        live = live_logger(str(tmp_path / "live"), resume=False)
    assert isinstance(live, NoLive)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "dvclive is not installed" in caplog.records[0].getMessage()
    with live as same:  # every call the stages make
        same.log_metric("train/loss", 0.5)
        same.next_step()
    live.end()
    assert not (tmp_path / "live").exists()


def test_live_logger__with_dvclive_is_dvclive(tmp_path):
    from dvclive import Live

    live = live_logger(str(tmp_path / "live"), resume=False)
    assert isinstance(live, Live)
    live.log_metric("train/loss", 0.5)
    live.next_step()
    live.end()
    assert (tmp_path / "live" / "metrics.json").exists()
