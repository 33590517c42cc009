"""Fine-tuning: a short QA run on synthetic data beats chance clearly; `semvlp eval` on the saved model repeats
its numbers; NLVR2 and matching fine-tunes run and round-trip; bad set-ups get clear errors."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import safetensors.torch
import torch

from semvlp.cli import main
from semvlp.data.corpus import feature_statistics, load_corpus, load_pairs
from semvlp.data.formats import open_features
from semvlp.data.synthetic import write_synthetic
from semvlp.data.tokenizer import train_vocab
from semvlp.finetune.loop import FinetuneOptions, load_finetuned
from semvlp.model import SemVLPConfig

TINY = Path(__file__).resolve().parents[2] / "configs" / "model" / "tiny.json"
CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
              max_position_embeddings=48, cross_layers=[1], visual_feat_dim=64, max_regions=8, num_region_labels=4,
              num_qa_labels=4, initializer_range=0.08)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    splits = write_synthetic(folder, {"train": 300, "val": 20, "test": 60}, seed=2)
    texts = [t.text for s in splits.values() for im in s for t in im.captions + im.questions]
    texts += [n for s in splits.values() for im in s for c in im.captions for n in c.hard_negatives]
    texts += ["both images contain neither only one the left right image has more than same number of"]
    vocab = train_vocab(texts, folder / "vocab", vocab_size=300)
    config = SemVLPConfig(vocab_size=sum(1 for _ in open(vocab)), **CONFIG)
    config.save(folder / "config.json")
    return folder, splits


def _finetune(data, out, task, steps, *extra):
    folder, _ = data
    return main(["finetune", "--task", task, "--data", str(folder), "--model-config", str(folder / "config.json"),
                 "--vocab", str(folder / "vocab" / "vocab.txt"), "--output", str(out), "--steps", str(steps),
                 "--batch-size", "32", "--lr", "1e-3", "--warmup-steps", "10", "--retrieval-images", "10", *extra])


@pytest.mark.slow
def test_short_qa_finetune_beats_chance_and_eval_repeats_it(data, tmp_path):
    folder, splits = data
    assert _finetune(data, tmp_path / "qa", "qa", 150, "--eval-splits", "test", "--report",
                     str(tmp_path / "report.json")) == 0
    results = json.loads((tmp_path / "qa" / "results.json").read_text())["test"]
    test_answers = [q.answer for im in splits["test"] for q in im.questions]
    majority = Counter(q.answer for im in splits["train"] for q in im.questions).most_common(1)[0][0]
    chance = sum(a == majority for a in test_answers) / len(test_answers)
    assert results["accuracy"] > chance + 0.08, (results, chance)
    assert json.loads((tmp_path / "report.json").read_text())["test_accuracy"] == results["accuracy"]
    assert main(["eval", "--model", str(tmp_path / "qa"), "--data", str(folder), "--splits", "test",
                 "--vocab", str(folder / "vocab" / "vocab.txt"), "--out", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["test"] == pytest.approx(results)


@pytest.mark.parametrize("task", ["nlvr2", "itm"])
def test_nlvr2_and_matching_finetunes_save_and_load(data, tmp_path, task):
    assert _finetune(data, tmp_path / task, task, 3, "--eval-splits", "val", "--mode", "two") == 0
    results = json.loads((tmp_path / task / "results.json").read_text())["val"]
    assert 0.0 <= results["accuracy"] <= 1.0
    if task == "itm":
        assert {"text_to_image/R@10", "image_to_text/R@1", "hard/binding"} <= set(results)
    model, options = load_finetuned(tmp_path / task)
    assert options.task == task and options.mode == "two" and options.steps == 3
    saved = safetensors.torch.load_file(str(tmp_path / task / "model.safetensors"))
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    # From scratch, the region features are standardised with the statistics of the training images.
    folder, _ = data
    features = open_features(folder)
    if task == "itm":
        ids = {t.image_id for t in load_corpus(folder, "train", features=features).texts}
    else:
        ids = {i for p in load_pairs(folder, "train", features) for i in (p.left_image_id, p.right_image_id)}
    mean, _ = feature_statistics(features, ids)
    torch.testing.assert_close(saved["semvlp.region_embeddings.feature_mean"], torch.from_numpy(mean))


def test_bad_setups_are_named(data, tmp_path, capsys):
    folder, _ = data
    with pytest.raises(ValueError, match="mode: expected one of"):
        FinetuneOptions("qa", mode="three")
    with pytest.raises(ValueError, match="task: expected one of"):
        FinetuneOptions("vqa")
    assert main(["finetune", "--task", "qa", "--data", str(folder), "--model-config", str(TINY),
                 "--vocab", str(folder / "vocab" / "vocab.txt"), "--output", str(tmp_path / "x"), "--steps", "1"]) == 2
    assert re.search(r"semvlp: error: vocab: .* has \d+ tokens but the model has 30522 word embeddings",
                     capsys.readouterr().err)
    assert main(["finetune", "--task", "qa", "--data", str(folder), "--init", str(tmp_path), "--output",
                 str(tmp_path / "y"), "--steps", "1"]) == 2
    assert "semvlp: error: init: expected model.safetensors and config.json" in capsys.readouterr().err
