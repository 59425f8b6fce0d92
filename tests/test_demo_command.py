"""The demo's training commands: the finetuning length follows the budget; both runs one thread each."""

from __future__ import annotations

from pathlib import Path

from helpers import load_script
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


def _demo_script():
    return load_script("demo")


def test_default_budget_keeps_the_yaml_schedule():
    demo = _demo_script()
    saved = OmegaConf.load(REPO / "configs/demo/demo.yaml")
    assert demo.finetune_updates(15) == saved["optimization"]["max_update"] == 1200
    assert saved["optimization"]["stop_time_hours"] == 0.25  # the 15 minutes that 1,200 updates are sized for
    assert OmegaConf.to_container(saved, resolve=False)["lr_scheduler"]["total_num_update"] == "${optimization.max_update}"


def test_pretraining_and_finetuning_build_the_same_model_and_task():
    finetune = OmegaConf.load(REPO / "configs/demo/demo.yaml")
    pretrain = OmegaConf.load(REPO / "configs/demo/pretrain.yaml")
    assert finetune["model"] == pretrain["model"]
    for key in ("_name", "patch_image_size", "max_image_size", "num_bins", "code_dict_size", "max_src_length",
                "max_tgt_length"):
        assert finetune["task"][key] == pretrain["task"][key], key


def test_longer_runs_make_more_updates_and_the_pretrained_run_starts_from_the_checkpoint(tmp_path):
    demo = _demo_script()
    assert demo.finetune_updates(60) == 4800 and demo.finetune_updates(5) == 400
    start = tmp_path / "start.pt"
    sources = {t: tmp_path / "data" / t for t in demo.DATA_PREFIXES}
    cmd = demo.training_command("demo", tmp_path / "run", sources, 60, demo.finetune_updates(60), smoke=False,
                                start=start)
    assert "optimization.max_update=4800" in cmd and "optimization.stop_time_hours=1.0000" in cmd
    assert f"checkpoint.finetune_from_model={start}" in cmd and "task.matching_data=null" in cmd
    scratch = demo.training_command("demo", tmp_path / "run", sources, 15, 1200, smoke=False)
    assert not any(c.startswith("checkpoint.finetune_from_model") for c in scratch)


def test_every_process_runs_one_thread():
    demo = _demo_script()
    assert demo.ONE_THREAD == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_pretraining_learns_captions_first_then_all_three_then_the_binding(tmp_path):
    demo = _demo_script()
    from ofa_cn.demo.data import TASKS
    from ofa_cn.demo.data.binding import BINDING_TASKS

    (first, first_sources, first_updates), (second, second_sources, second_updates), *binding = demo.PRETRAIN_STAGES
    assert first_sources == {"caption": "data/caption"} and first_updates > 0
    assert second_sources == {t: f"data/{t}" for t in TASKS} and second_updates is None  # the YAML's max_update
    # sided pairs make the decoder read the colour, random pairs bind it: two colours, then eight
    assert [sources for _folder, sources, _updates in binding] == [
        {"grounding": "binding/sided_2colours"}, {"grounding": "binding/grounding_2colours"},
        {"grounding": "binding/sided_8colours"}, {"grounding": "binding/grounding_8colours"},
        {"caption": "data/caption", "grounding": "binding/grounding_mixed", "ocr": "data/ocr"}]
    for _folder, sources, updates in binding:
        assert updates > 0
        for field, prefix in sources.items():  # each reads what the generator writes, in the field it fits
            kind, name = prefix.split("/")
            assert (kind == "data" and name == field) or (kind == "binding" and BINDING_TASKS[name][1] == field)
    data = tmp_path / "data"
    cmd = demo.training_command("pretrain", tmp_path / first, {"caption": data / "caption"}, 60, first_updates,
                                smoke=False)
    assert f"task.caption_data='{data}/caption_train.tsv,{data}/caption_valid.tsv'" in cmd
    assert "task.grounding_data=null" in cmd and "task.ocr_data=null" in cmd and "task.matching_data=null" in cmd
    assert f"optimization.max_update={first_updates}" in cmd
    start = tmp_path / first / "checkpoint_last.pt"
    cmd = demo.training_command("pretrain", tmp_path / "m", {"matching": tmp_path / "m2"}, 60, 1000, smoke=False,
                                start=start)
    assert f"task.matching_data='{tmp_path}/m2_train.tsv,{tmp_path}/m2_valid.tsv'" in cmd
    assert sum(c.endswith("_data=null") for c in cmd) == 3 and f"checkpoint.finetune_from_model={start}" in cmd


def test_a_run_cut_by_the_time_limit_is_named_in_the_notes():
    demo = _demo_script()
    assert demo.stopped_early({"from scratch": 1200, "pretrained + finetuned": 1200}, 1200, 15) == ""
    assert demo.stopped_early({"from scratch": "?"}, 1200, 15) == ""  # no log: nothing to claim
    note = demo.stopped_early({"from scratch": 1200, "pretrained + finetuned": 800}, 1200, 15)
    assert "15-minute limit" in note and "1200 planned" in note
    assert "pretrained + finetuned after 800" in note and "from scratch after" not in note
