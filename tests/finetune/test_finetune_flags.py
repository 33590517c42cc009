"""`semvlp finetune` and `semvlp eval` with --features (LXMERT-style split TSVs with COCO_<split>_<id> ids beside a
folder of COCO JSON with integer ids) and --num-workers (the same training with 0 and 2 DataLoader workers, in the
plain loop and under DeepSpeed)."""

import copy
import dataclasses
import json
import shutil

import pytest
import torch

from semvlp.cli import main
from semvlp.data.formats import open_features
from semvlp.data.formats.lxmert_tsv import write_tsv
from semvlp.finetune.loop import FinetuneOptions, finetune, init_model
from semvlp.finetune.run import TaskData, tokenizer_for
from semvlp.model import SemVLPConfig

from finetune_runs import finetune_args
from pretrain_runs import losses, run


@pytest.fixture(scope="module")
def split_tsvs(coco_data, tmp_path_factory):
    """(bare, feats): the fixture's JSON, config and vocab without its features.tsv, and its features as
    feats/train2014_0.tsv, feats/train2014_1.tsv and feats/val2014.tsv (with the val and test images)."""
    folder, splits = coco_data
    root = tmp_path_factory.mktemp("split_tsvs")
    bare, feats = root / "bare", root / "feats"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("features*"))
    feats.mkdir()
    store = open_features(folder)

    def coco(image_id, split):
        return dataclasses.replace(store[image_id], image_id=f"COCO_{split}_{int(image_id):012d}")

    train = [coco(im.record.image_id, "train2014") for im in splits["train"]]
    write_tsv(feats / "train2014_0.tsv", train[:20])
    write_tsv(feats / "train2014_1.tsv", train[20:])
    write_tsv(feats / "val2014.tsv", [coco(im.record.image_id, "val2014") for im in splits["val"] + splits["test"]])
    return bare, feats


def test_finetune_eval_and_predict_read_the_files_the_flag_names(split_tsvs, tmp_path, capsys):
    bare, feats = split_tsvs
    flag = ["--features", str(feats / "train2014_*.tsv"), str(feats / "val2014.tsv")]
    assert main([*finetune_args(bare, tmp_path / "qa", "qa"), *flag]) == 0
    assert json.loads((tmp_path / "qa" / "results.json").read_text())["val"]["accuracy"] >= 0
    # The model folder keeps the vocab it was trained with: eval needs no --vocab (the default BERT vocab would not
    # fit the model's embedding table).
    assert (tmp_path / "qa" / "vocab.txt").read_text() == (bare / "vocab" / "vocab.txt").read_text()
    assert main(["eval", "--model", str(tmp_path / "qa"), "--data", str(bare), "--splits", "val", *flag]) == 0
    assert main(["predict", "--task", "vqa", "--model", str(tmp_path / "qa"), "--data", str(bare), "--split", "val",
                 "--out", str(tmp_path / "answers.json"), *flag]) == 0
    assert json.loads((tmp_path / "answers.json").read_text())
    capsys.readouterr()
    # Without the flag the folder's own features are read, and it has none.
    assert main(["eval", "--model", str(tmp_path / "qa"), "--data", str(bare), "--vocab",
                 str(bare / "vocab" / "vocab.txt"), "--splits", "val"]) == 2
    assert "semvlp: error: folder: expected region features in" in capsys.readouterr().err


def test_a_pattern_that_matches_nothing_is_named(split_tsvs, tmp_path, capsys):
    bare, feats = split_tsvs
    pattern = str(feats / "test2015_*.tsv")
    assert main([*finetune_args(bare, tmp_path / "qa", "qa"), "--features", pattern]) == 2
    assert f"semvlp: error: --features: {pattern!r} matches no file" in capsys.readouterr().err
    assert not (tmp_path / "qa").exists()


def test_deepspeed_fine_tuning_logs_the_same_losses_with_0_and_2_workers(coco_data, tmp_path):
    folder, _ = coco_data
    logged = []
    for workers in ("0", "2"):
        out = tmp_path / f"workers_{workers}"
        done = run("plain", 1, [*finetune_args(folder, out, "itm", steps=3), "--deepspeed-config", "zero2_fp32",
                                "--num-workers", workers])
        assert f"DataLoader: {workers} worker processes per rank (--num-workers)" in done.stderr
        logged.append([r["loss"] for r in losses(out)])
    assert len(logged[0]) == 3 and logged[0] == logged[1]


@pytest.mark.parametrize("task", ["qa", "itm"])
def test_training_is_the_same_with_0_and_2_workers(coco_data, task):
    folder, _ = coco_data
    config = SemVLPConfig.load(folder / "config.json")
    data = TaskData(folder, tokenizer_for(config, folder / "vocab" / "vocab.txt"), config.visual_feat_dim)
    answers = data.answers("train", 8) if task == "qa" else None
    dataset = data.dataset(task, "train", answers, seed=3)
    options = FinetuneOptions(task, steps=4, batch_size=8, lr=1e-3, warmup_steps=1, seed=3)
    model = init_model(task, config, None, len(answers) if answers else None, 3)
    assert config.hidden_dropout_prob > 0  # dropout draws from the global RNG, which the workers must not move
    runs = []
    for workers in (0, 2):
        trained = copy.deepcopy(model)
        runs.append((finetune(trained, dataset, options, progress=False, num_workers=workers), trained))
    (alone, model_0), (with_workers, model_2) = runs
    assert [r["loss"] for r in alone] == [r["loss"] for r in with_workers]
    for (name, a), b in zip(model_0.state_dict().items(), model_2.state_dict().values()):
        assert torch.equal(a, b), name
