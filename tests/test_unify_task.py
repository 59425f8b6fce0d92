"""unify_task set up from a released-style config: paths of the authors' machines do not stop it
(they are read only when a split is loaded), and unsupported infilling settings are named then."""

from __future__ import annotations

import pytest

import ofa_cn.tasks  # noqa: F401  (registers the tasks)
from ofa_cn.tasks.pretrain import UnifyConfig, UnifyTask
from pretrain_data import write_pretrain_files


def test_setup_ignores_missing_training_files_until_they_are_read(tmp_path):
    cfg = UnifyConfig(data="/nowhere/vision_language_examples.tsv", text_data="/nowhere/text.tsv",
                      neg_sample_dir="/nowhere/negative_sample")
    task = UnifyTask.setup_task(cfg)  # as when a released checkpoint is loaded with its saved config
    with pytest.raises(FileNotFoundError, match="/nowhere/vision_language_examples.tsv does not exist"):
        task.load_dataset("train")
    files = write_pretrain_files(tmp_path, scenes=1)
    task = UnifyTask.setup_task(UnifyConfig(data=str(files["pairs"]), neg_sample_dir="/nowhere/negative_sample",
                                            patch_image_size=64))
    with pytest.raises(FileNotFoundError, match="neg_sample_dir /nowhere/negative_sample lacks all_captions.txt"):
        task.load_dataset("train")


def test_unsupported_infilling_settings_are_named(tmp_path):
    files = write_pretrain_files(tmp_path, scenes=1)
    cfg = UnifyConfig(data=str(files["pairs"]), text_data=str(files["text"]), random_ratio=0.1, patch_image_size=64)
    task = UnifyTask.setup_task(cfg)
    with pytest.raises(ValueError, match="text infilling supports mask_length=span-poisson with random_ratio=0"):
        task.load_dataset("train")
    task.load_dataset("valid")  # no infilling at validation
    assert len(task.datasets["valid"]) == 3


def test_training_batches_mix_the_tasks():
    """fairseq cuts batches from ordered_indices in order: the mixture's order interleaves its parts,
    reproducibly for a seed and differently per epoch."""
    from fairseq.data import data_utils

    from ofa_cn.tasks.pretrain import MixtureDataset

    class Part:
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

    mixture = MixtureDataset([Part(60), Part(40), Part(20)])

    def order(seed):
        with data_utils.numpy_seed(seed):
            return mixture.ordered_indices()

    first = order(2)
    assert sorted(first.tolist()) == list(range(120))
    parts = [int(mixture._locate(int(i))[0].n) for i in first]
    batches = [set(parts[k:k + 16]) for k in range(0, 112, 16)]
    assert sum(len(b) > 1 for b in batches) == len(batches)  # every batch of 16 holds two tasks or three
    assert (order(2) == first).all() and not (order(3) == first).all()
