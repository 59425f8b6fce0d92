"""The demo's training command: the learning-rate schedule follows the time budget."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


def _demo_script():
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "scripts/demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_budget_keeps_the_yaml_schedule():
    demo = _demo_script()
    saved = OmegaConf.load(REPO / "configs/demo/demo.yaml")
    assert demo.schedule_length(15) == saved["lr_scheduler"]["total_num_update"] == 3000
    assert saved["optimization"]["stop_time_hours"] == 0.25  # the 15 minutes that 3,000 updates are sized for


def test_longer_runs_decay_over_more_updates(tmp_path):
    demo = _demo_script()
    assert demo.schedule_length(60) == 12000
    assert demo.schedule_length(5) == 1000
    cmd = demo.training_command(tmp_path / "run", tmp_path / "data", 60, smoke=False)
    assert "lr_scheduler.total_num_update=12000" in cmd
    assert "optimization.stop_time_hours=1.0000" in cmd
