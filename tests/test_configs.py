"""Every YAML under configs/ composes the way fairseq-hydra-train composes it, and builds its task,
model and criterion.

The composition follows fairseq_cli/hydra_train.py: `hydra_init(config_name)` registers fairseq's
schema under the config's name, Hydra merges the YAML over it, `add_defaults` merges the
registered task/criterion/optimizer dataclasses, then the config is resolved into a plain one.
Required values are filled with tiny stand-ins, the model is shrunk with `++model.*` overrides
and built on the meta device; nothing is trained and no dataset is read (tests/test_train_e2e.py
trains through the same entry point).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

import ofa_cn.tasks  # noqa: F401  (registers the tasks, the model and the criteria)
from fairseq import optim, tasks
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.optim import OPTIMIZER_REGISTRY, MemoryEfficientFP16Optimizer
from fairseq.dataclass.initialize import add_defaults, hydra_init
from fairseq.dataclass.utils import omegaconf_no_object_check
from fairseq.tasks import TASK_REGISTRY
from ofa_cn.model.config import OFAConfig, config_for_arch
from ofa_cn.model.ofa import OFAModelConfig

# Hydra warns that merging a YAML over fairseq's schema of the same name is deprecated; it is how
# fairseq-hydra-train works.
pytestmark = pytest.mark.filterwarnings("ignore:(?s).*validated against ConfigStore schema:UserWarning")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
CONFIG_IDS = [str(p.relative_to(REPO / "configs")) for p in CONFIGS]

# Every size different (D=24, F=40, 3 heads, 2+1 layers), so a wrong shape cannot pass by accident.
TINY_MODEL = ["++model.resnet_type=resnet10", "++model.encoder_embed_dim=24", "++model.decoder_embed_dim=24",
              "++model.encoder_ffn_embed_dim=40", "++model.decoder_ffn_embed_dim=40",
              "++model.encoder_attention_heads=3", "++model.decoder_attention_heads=3",
              "++model.encoder_layers=2", "++model.decoder_layers=1", "task.patch_image_size=64"]
ENV_VALUE = re.compile(r"^\$\{oc\.env:(\w+)\}$")  # a required value that falls back to the environment
VALIDATION = {"caption": ("eval_cider", "cider"), "refcoco": ("eval_acc", "acc"), "ocr": ("eval_acc", "acc")}


def raw_yaml(path: Path):
    return OmegaConf.load(path)


def required_keys(path: Path) -> dict[str, str]:
    """'group.key' -> how it is required ('???' or the environment variable it falls back to)."""
    found = {}
    for group, node in raw_yaml(path).items():
        if group == "hydra" or not OmegaConf.is_dict(node):
            continue
        for key in node:
            if OmegaConf.is_missing(node, key):
                found[f"{group}.{key}"] = "???"
                continue
            value = OmegaConf.to_container(node, resolve=False)[key]
            match = ENV_VALUE.match(str(value))
            if match:
                found[f"{group}.{key}"] = match.group(1)
    return found


def header_command(path: Path) -> list[str]:
    """The command in the file's opening comment (up to the first bare '#'), split like a shell."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() == "#" or not line.startswith("#"):
            break
        lines.append(line[1:].strip().removesuffix("\\"))
    return shlex.split(" ".join(lines))


def compose_config(path: Path, overrides: list[str]):
    """fairseq-hydra-train's composition of `path`, before resolution."""
    hydra_init(path.stem)
    with initialize_config_dir(config_dir=str(path.parent), version_base=None):
        cfg = compose(config_name=path.stem, overrides=overrides)
    add_defaults(cfg)
    return cfg


def resolve(cfg):
    """As hydra_train does next: every interpolation resolved into a plain struct config."""
    with omegaconf_no_object_check():
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    OmegaConf.set_struct(cfg, True)
    return cfg


def stand_ins(path: Path, tmp_path: Path) -> list[str]:
    """Overrides that give every required value of `path` a tiny stand-in."""
    overrides = []
    for key in required_keys(path):
        if key.startswith("task."):
            value = f"'{tmp_path}/train.tsv,{tmp_path}/valid.tsv'"
        elif key == "criterion.scst_cider_cached_tokens":
            cache = tmp_path / "df.json"  # the format scripts/build_cider_df.py writes
            cache.write_text(json.dumps({"document_frequency": {"红": 1, "红 色": 1}, "ref_len": 0.0,
                                         "num_images": 1}), encoding="utf-8")
            value = str(cache)
        elif key == "checkpoint.restore_file":
            value = str(tmp_path / "released.pt")
        else:
            raise AssertionError(f"{path.name}: no stand-in for the required value {key}; add one here")
        overrides.append(f"{key}={value}")
    return overrides


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """config path -> (raw YAML, resolved config, task, model, criterion); built once per file.

    The criterion is None when it is not registered.
    """
    cache = {}

    def build(path: Path):
        if path not in cache:
            tmp = tmp_path_factory.mktemp(path.stem)
            cfg = resolve(compose_config(path, stand_ins(path, tmp) + TINY_MODEL))
            task = tasks.setup_task(cfg.task)
            with torch.device("meta"):  # every module and flag, without allocating or initialising weights
                model = task.build_model(cfg.model)
            name = cfg.criterion._name
            criterion = task.build_criterion(cfg.criterion) if name in CRITERION_REGISTRY else None
            cache[path] = (raw_yaml(path), cfg, task, model, criterion)
        return cache[path]

    return build


def test_configs_exist():
    names = {str(p.relative_to(REPO / "configs")) for p in CONFIGS}
    for expected in ("pretrain/ofa_cn_base.yaml", "caption/muge_large_stage2.yaml",
                     "grounding/refcocog_cn_large.yaml", "ocr/ocr_cn_base.yaml"):
        assert expected in names


@pytest.mark.parametrize("path", CONFIGS, ids=CONFIG_IDS)
def test_header_command_runs_this_file_and_sets_every_required_value(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# fairseq-hydra-train --config-dir"), f"{path.name}: first line is {first!r}"
    argv = header_command(path)
    assert argv[0] == "fairseq-hydra-train"
    config_dir = argv[argv.index("--config-dir") + 1]
    config_name = argv[argv.index("--config-name") + 1]
    assert REPO / config_dir / f"{config_name}.yaml" == path, "the command names another file"
    given = {arg.split("=", 1)[0].lstrip("+") for arg in argv if "=" in arg}
    missing = set(required_keys(path)) - given
    assert not missing, f"{path.name}: the header command does not set {sorted(missing)}"


@pytest.mark.parametrize("path", CONFIGS, ids=CONFIG_IDS)
def test_builds_task_model_criterion(path, built):
    raw = raw_yaml(path)
    criterion_name = raw.criterion._name
    if criterion_name not in CRITERION_REGISTRY:
        if criterion_name == "scst_reward_criterion":
            pytest.xfail("scst criterion not registered")
        pytest.fail(f"{path.name}: criterion {criterion_name!r} is not registered")
    raw, cfg, task, model, criterion = built(path)

    assert type(task) is TASK_REGISTRY[raw.task._name]
    assert type(criterion) is CRITERION_REGISTRY[criterion_name]
    # fairseq reads common.user_dir relative to the working directory: the repository root
    assert cfg.common.user_dir == "ofa_cn" and (REPO / cfg.common.user_dir / "__init__.py").is_file()
    assert cfg.dataset.ignore_unused_valid_subsets is True

    # Model: the YAML's regularisation reached OFAConfig; the tiny overrides took effect.
    for key in ("dropout", "attention_dropout", "encoder_drop_path_rate", "decoder_drop_path_rate",
                "resnet_drop_path_rate"):
        if key in raw.model:
            assert getattr(model.cfg, key) == raw.model[key], key
    assert model.cfg.encoder_embed_dim == 24 and model.cfg.decoder_layers == 1
    frozen = bool(raw.model.get("freeze_encoder_embedding")) or bool(raw.model.get("freeze_decoder_embedding"))
    assert model.encoder.embed_tokens.weight.requires_grad is not frozen

    # Optimizer: builds as fairseq's trainer builds it, the memory-efficient fp16 wrapper included
    # (it needs an optimizer that keeps fp32 moments for fp16 weights: adam, not fused_adam).
    params = [torch.nn.Parameter(torch.zeros(3))]
    if cfg.common.memory_efficient_fp16 or cfg.common.memory_efficient_bf16:
        optimizer = MemoryEfficientFP16Optimizer.build_optimizer(cfg, params).wrapped_optimizer
    else:
        optimizer = optim.build_optimizer(cfg.optimizer, params)
    assert type(optimizer) is OPTIMIZER_REGISTRY[raw.optimizer._name]

    # Criterion: its hyper-parameters are the YAML's.
    if "label_smoothing" in raw.criterion:
        assert criterion.eps == raw.criterion.label_smoothing
    for key in ("drop_worst_ratio", "drop_worst_after", "ignore_prefix_size"):
        if key in raw.criterion:
            assert getattr(criterion, key) == raw.criterion[key], key


@pytest.mark.parametrize("path", CONFIGS, ids=CONFIG_IDS)
def test_model_keys_are_known(path):
    """Every model key is an option of the registered model (OFAConfig's fields, and the freezing switches)."""
    unknown = set(raw_yaml(path).model) - set(OFAModelConfig.__dataclass_fields__)
    assert not unknown, f"{path.name}: model keys {sorted(unknown)} are not OFAModelConfig fields"
    assert OFAConfig.field_names() - {"vocab_size", "pad"} <= set(OFAModelConfig.__dataclass_fields__)


def test_a_misspelt_model_key_is_refused(tmp_path):
    """`ofa` is registered with its dataclass, so hydra refuses a key it does not have instead of ignoring it."""
    path = REPO / "configs" / "demo" / "demo.yaml"
    with pytest.raises(Exception, match="Key 'encoder_layer' not in 'OFAModelConfig'"):
        compose_config(path, stand_ins(path, tmp_path) + ["+model.encoder_layer=3"])


def test_an_architecture_preset_fills_what_the_yaml_leaves_out(tmp_path):
    """hydra merges OFAModelConfig (None = not given) first, so `_name: ofa_cn_large` still gives the large sizes."""
    path = REPO / "configs" / "caption" / "muge_large_stage1.yaml"
    cfg = compose_config(path, stand_ins(path, tmp_path))
    assert cfg.model.encoder_layers is None and cfg.model.dropout == 0.1
    with torch.device("meta"):
        model = tasks.setup_task(cfg.task).build_model(cfg.model)
    assert model.cfg == config_for_arch("ofa_cn_large", dropout=0.1, encoder_drop_path_rate=0.1,
                                        decoder_drop_path_rate=0.1)


RELEASED = [p for p in CONFIGS if p.parent.name != "demo"]
RELEASED_IDS = [str(p.relative_to(REPO / "configs")) for p in RELEASED]


@pytest.mark.parametrize("path", RELEASED, ids=RELEASED_IDS)
def test_released_run_settings(path, built):
    """The settings every released-checkpoint config shares, and the arithmetic of its schedule."""
    raw, cfg = built(path)[:2]
    size = "large" if "large" in path.stem else "base"
    assert cfg.model._name == f"ofa_cn_{size}"
    assert config_for_arch(cfg.model._name).encoder_embed_dim == {"base": 768, "large": 1024}[size]

    assert cfg.distributed_training.ddp_backend == "legacy_ddp"
    # fp16 as the original (memory_efficient_fp16 implies it on fairseq's command line, not in YAML)
    assert cfg.common.fp16 and cfg.common.fp16_scale_window in (128, 512)
    assert cfg.common.tensorboard_logdir == f"{cfg.checkpoint.save_dir}/tensorboard"
    assert cfg.dataset.required_batch_size_multiple == 1

    # Effective batch = per-GPU batch x GPUs x update_freq, as in the original scripts.
    batch = cfg.dataset.batch_size * cfg.distributed_training.distributed_world_size * cfg.optimization.update_freq[0]
    expected = 4 if path.parent.name == "pretrain" else 64 if "stage2" in path.stem else 128
    assert batch == expected

    # Schedule: linear warmup over a fixed share of max_update, decay to the end at max_update.
    lr = cfg.optimization.lr[0]
    assert isinstance(lr, float) and 0 < lr <= 1e-4, f"lr {lr!r} (a YAML float written as a string?)"
    assert cfg.lr_scheduler._name == "polynomial_decay"
    max_update = cfg.optimization.max_update
    assert cfg.lr_scheduler.total_num_update == max_update
    ratio = 0.01 if path.parent.name == "pretrain" else 0.06
    assert cfg.lr_scheduler.warmup_updates == round(ratio * max_update)
    assert cfg.optimization.max_epoch > 0
    if "drop_worst_after" in raw.criterion:
        assert 0 < cfg.criterion.drop_worst_after < max_update, "drop_worst would never start"

    # Validation: the task's metric picks the best checkpoint.
    if raw.task._name in VALIDATION:
        flag, metric = VALIDATION[raw.task._name]
        assert cfg.task[flag] is True
        assert cfg.checkpoint.best_checkpoint_metric == metric == TASK_REGISTRY[raw.task._name].METRIC_NAME
        assert cfg.checkpoint.maximize_best_checkpoint_metric is True
        json.loads(cfg.task.eval_args)
    else:
        assert cfg.dataset.disable_validation is True

    # Finetuning starts from released weights with fresh optimizer, schedule, meters and data order.
    if "restore_file" in raw.checkpoint:
        for flag in ("reset_optimizer", "reset_dataloader", "reset_meters", "reset_lr_scheduler"):
            assert cfg.checkpoint[flag] is True, flag
    if raw.task.get("scst"):
        assert json.loads(cfg.task.scst_args)["beam"] >= 2


@pytest.mark.parametrize("path", RELEASED, ids=RELEASED_IDS)
def test_missing_required_values_stop_the_run(path, tmp_path, monkeypatch):
    """Without its required values a config fails before training, naming what is missing."""
    required = required_keys(path)
    env_vars = {key: how for key, how in required.items() if how != "???"}
    for var in env_vars.values():
        monkeypatch.delenv(var, raising=False)
    cfg = compose_config(path, [])
    for key, var in env_vars.items():
        with pytest.raises(InterpolationResolutionError, match=var):
            OmegaConf.select(cfg, key)  # resolving it, as hydra_train's to_container does
    # A `???` under task is replaced by the dataclass default in the merge; the task then refuses
    # to load data instead of starting on nothing.
    assert any(key.startswith("task.") for key in required), f"{path.name}: no required data paths"
    for var in env_vars.values():
        monkeypatch.setenv(var, str(tmp_path / "given.pt"))
    task = tasks.setup_task(resolve(cfg).task)
    with pytest.raises(ValueError):
        task.load_dataset("train")


def test_schedule_comments_match_values():
    """The comments that derive max_update and warmup_updates agree with the values next to them."""
    for path in RELEASED:
        text = path.read_text(encoding="utf-8")
        max_update = int(re.search(r"^  max_update: (\d+)", text, re.M).group(1))
        max_epoch = int(re.search(r"^  max_epoch: (\d+)", text, re.M).group(1))
        note = re.search(r"^  warmup_updates: (\d+)  # .*?x ([\d,]+)", text, re.M)
        assert note, f"{path.name}: warmup_updates has no derivation comment"
        assert int(note.group(2).replace(",", "")) == max_update, path.name
        if path.parent.name == "pretrain":
            continue  # an update budget of our own; the comment gives the formula only
        per_epoch = re.search(r"ceil\(([\d,]+) / (\d+)\) = ([\d,]+) updates per\s+#?\s*epoch x (\d+) epochs = ([\d,]+)",
                              text)
        assert per_epoch, f"{path.name}: max_update has no derivation comment"
        rows, batch, steps, epochs, total = (int(g.replace(",", "")) for g in per_epoch.groups())
        assert math.ceil(rows / batch) == steps and steps * epochs == total == max_update, path.name
        assert epochs == max_epoch, path.name
