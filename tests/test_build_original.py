"""scripts/build_original.py's edits to the original OFA: each applies once, a second run changes nothing,
and a file that is not the expected one stops the build with the file's name (no download, no venv)."""

from __future__ import annotations

import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def build():
    return load_script("build_original")


# The lines of OFA-Sys/OFA @a36b91c (and of hydra-core 1.0.7, torchvision 0.28.0) that the edits change,
# with a line around them that must stay as it is.
FILES = {
    "fairseq/fairseq/dataclass/configs.py":
        "    common: CommonConfig = CommonConfig()\n    task: Any = None\n    ema: EMAConfig = EMAConfig()\n",
    "fairseq/fairseq/models/transformer/transformer_config.py":
        "    encoder: EncDecBaseConfig = EncDecBaseConfig()\n"
        "    quant_noise: QuantNoiseConfig = field(default=QuantNoiseConfig())\n",
    "fairseq/fairseq/dataclass/initialize.py":
        "import logging\nfrom hydra.core.config_store import ConfigStore\n\n"
        "    for k in FairseqConfig.__dataclass_fields__:\n        v = FairseqConfig.__dataclass_fields__[k].default\n",
    "tasks/__init__.py": "from .pretrain_tasks import *\nfrom .speech_tasks import *\n",
    "utils/checkpoint_utils.py": '        state = torch.load(f, map_location=torch.device("cpu"))\n',
    "fairseq/fairseq/checkpoint_utils.py": '        state = torch.load(f, map_location=torch.device("cpu"))\n',
}
SITE = {
    "hydra/conf/__init__.py": "    class JobConfig:\n        override_dirname: OverrideDirname = OverrideDirname()\n"
                              "    run: RunDir = RunDir()\n",
    "torchvision/__init__.py": "from . import extension  # usort:skip  # noqa: F401\nfrom torchvision import (\n",
}


def _write(root, files):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_edits_apply_once_and_then_change_nothing(build, tmp_path):
    checkout, site = tmp_path / "OFA", tmp_path / "site"
    _write(checkout, FILES)
    _write(site, SITE)
    assert {p.path.removeprefix("site:") for p in build.PATCHES} == set(FILES) | set(SITE)
    for patch in build.PATCHES:
        assert build.apply_patch(patch, site if patch.path.startswith("site:") else checkout) == "applied"
    edited = {name: (checkout / name).read_text() for name in FILES} | {name: (site / name).read_text() for name in SITE}
    for patch in build.PATCHES:
        assert build.apply_patch(patch, site if patch.path.startswith("site:") else checkout) == "already applied"
    assert edited == {name: (checkout / name).read_text() for name in FILES} | {name: (site / name).read_text()
                                                                               for name in SITE}
    assert "common: CommonConfig = field(default_factory=CommonConfig)" in edited["fairseq/fairseq/dataclass/configs.py"]
    assert "    task: Any = None\n" in edited["fairseq/fairseq/dataclass/configs.py"]
    assert "override_dirname: OverrideDirname = field(default_factory=OverrideDirname)" in edited["hydra/conf/__init__.py"]
    assert "weights_only=False" in edited["utils/checkpoint_utils.py"]
    compile(edited["tasks/__init__.py"], "tasks/__init__.py", "exec")  # still Python


def test_an_unexpected_file_stops_the_build_with_its_name(build, tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text("from .mm_tasks import *\n")
    patch = next(p for p in build.PATCHES if p.path == "tasks/__init__.py")
    with pytest.raises(SystemExit, match=r"tasks/__init__\.py.*speech_tasks"):
        build.apply_patch(patch, tmp_path)


def test_the_original_runs_from_its_checkout(build, tmp_path):
    env = build.python_environment(tmp_path)
    assert env["PYTHONPATH"].split(":") == [str(tmp_path.resolve() / "fairseq"), str(tmp_path.resolve())]
    with pytest.raises(SystemExit, match="not a checkout of OFA-Sys/OFA"):
        build.check_checkout(tmp_path)
