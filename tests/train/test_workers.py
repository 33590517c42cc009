"""DataLoader workers: --num-workers auto resolves as documented, the batches (token ids, word and region masks,
ITM negatives) are the same with 0 and 2 workers and from a resumed start step, and a run killed between
checkpoints and resumed with 2 workers logs the uninterrupted run's losses."""

import dataclasses

import pytest
import torch

from semvlp.cli import build_parser
from semvlp.data.collate import Collator
from semvlp.data.dataset import AnswerVocab, PretrainingDataset
from semvlp.data.records import BadRecords
from semvlp.data.synthetic import write_synthetic
from semvlp.data.tokenizer import WordPieceTokenizer
from semvlp.train.checkpoint import latest_tag
from semvlp.train.loop import train_loader
from semvlp.train.options import PretrainOptions
from semvlp.train.run_data import (MicroBatchSampler, TokenBudgetSampler, dataset_token_budget, load_run_data,
                                   ranks_on_node, resolve_num_workers, sample_lengths)

from pretrain_runs import deepspeed_config, kill_after_step, losses, pretrain_args, run, tiny_config

CPU = torch.device("cpu")


@pytest.mark.parametrize("requested,in_memory,ranks,cpus,expected", [
    ("auto", True, 1, 16, 0),      # synthetic data: a worker would only copy what is in memory
    ("auto", False, 1, 2, 1),      # file-backed: CPUs per rank - 1 ...
    ("auto", False, 1, 16, 4),     # ... at most 4
    ("auto", False, 8, 16, 1),
    ("auto", False, 8, 8, 0),      # one CPU per rank: the rank's own process reads
    ("auto", False, 4, 2, 0),
    (3, True, 1, 1, 3),            # an explicit number wins
    (0, False, 1, 16, 0),
])
def test_the_number_of_workers_resolves_as_documented(requested, in_memory, ranks, cpus, expected):
    workers, why = resolve_num_workers(requested, in_memory, ranks, cpus)
    assert workers == expected
    assert why.startswith("--num-workers")


def test_ranks_on_the_node_come_from_the_launcher(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_SIZE", raising=False)
    assert ranks_on_node(6) == 6
    monkeypatch.setenv("LOCAL_SIZE", "2")  # the deepspeed launcher's
    assert ranks_on_node(6) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # torchrun's
    assert ranks_on_node(6) == 3


def test_the_command_line_takes_auto_or_a_count(capsys):
    base = ["pretrain", "--model-config", "tiny", "--deepspeed-config", "zero2_fp32", "--output", "o", "--max-steps",
            "1"]
    parser = build_parser()
    assert parser.parse_args(base).num_workers == "auto" == PretrainOptions.num_workers
    assert parser.parse_args([*base, "--num-workers", "2"]).num_workers == 2
    assert parser.parse_args(["finetune", "--task", "qa", "--data", "d", "--output", "o"]).num_workers == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--num-workers", "-1"])
    assert "argument --num-workers: expected 'auto' or an integer of at least 0, got '-1'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="num_workers: expected 'auto' or an integer of at least 0, got 'many'"):
        PretrainOptions("m.json", "d.json", "out", 5, num_workers="many")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A file-backed (TSV) training set whose captions are attribute samples half the time."""
    folder = tmp_path_factory.mktemp("workers")
    write_synthetic(folder, {"train": 12}, seed=2)
    data = load_run_data(str(folder), BadRecords(), 64)
    tokenizer = WordPieceTokenizer(None, max_length=64)
    return PretrainingDataset(data.train, tokenizer, AnswerVocab.from_texts(data.train.texts, 8), seed=11,
                              attribute_mask_rate=0.5), tokenizer


def _collator(tokenizer, budget=None):
    return Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size, 5, budget=budget)


def _batches(dataset, sampler, collator, workers):
    return list(train_loader(dataset, sampler, collator, workers, CPU))


def _fields(batch) -> dict:
    """Every tensor of a batch, its layout's included."""
    found = {}
    for name, value in vars(batch).items():
        if dataclasses.is_dataclass(value):
            found.update({f"{name}.{k}": v for k, v in _fields(value).items()})
        elif isinstance(value, torch.Tensor):
            found[name] = value
    return found


def _assert_same(batches, expected):
    assert len(batches) == len(expected)
    for n, (a, b) in enumerate(zip(batches, expected)):
        a, b = _fields(a), _fields(b)
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (n, name)


@pytest.mark.parametrize("by_tokens", [False, True])
def test_batches_are_the_same_with_0_and_2_workers_and_after_a_resume(dataset, by_tokens):
    dataset, tokenizer = dataset
    micro, accumulation, start = 4, 2, 5
    steps = len(dataset) // (micro * accumulation) + 3  # into the second epoch
    if by_tokens:
        budget = dataset_token_budget(dataset, 160, micro)

        def sampler(first):
            return TokenBudgetSampler(len(dataset), sample_lengths(dataset), budget, accumulation, 1, 0, 7, first,
                                      steps)
    else:
        budget = None

        def sampler(first):
            return MicroBatchSampler(len(dataset), micro, accumulation, 1, 0, 7, first, steps)
    collator = _collator(tokenizer, budget)
    alone = _batches(dataset, sampler(0), collator, 0)
    # What the comparison covers: masked words, masked regions, matching and mismatching pairs, several epochs.
    every = torch.cat([b.itm_labels for b in alone])
    assert {0, 1} <= set(every.tolist())
    assert sum(len(b.mlm_positions) for b in alone) > len(alone) and sum(len(b.mrm_positions) for b in alone) > 0
    assert len(alone) == steps * accumulation
    _assert_same(_batches(dataset, sampler(0), collator, 2), alone)
    _assert_same(_batches(dataset, sampler(start), collator, 2), alone[start * accumulation:])


STEPS, EVERY = 8, 3


def _args(folder, out, workers, *extra):
    return pretrain_args(folder / "data", tiny_config(folder, dropout=0.1), deepspeed_config(folder, "zero2_fp32"),
                         out, STEPS, 2, "--checkpoint-every", str(EVERY), "--num-workers", workers, *extra)


@pytest.mark.slow
def test_a_run_killed_and_resumed_with_2_workers_logs_the_losses_of_one_without_workers(tmp_path):
    write_synthetic(tmp_path / "data", {"train": 30, "val": 4, "novel": 4}, seed=3)
    full = tmp_path / "full"
    done = run("plain", 1, _args(tmp_path, full, "0"))
    assert "DataLoader: 0 worker processes per rank (--num-workers)" in done.stderr
    broken = tmp_path / "broken"
    kill_after_step("plain", 1, _args(tmp_path, broken, "2"), EVERY + 1, broken / "metrics.jsonl")
    logged = max(r["step"] for r in losses(broken))
    saved = int(latest_tag(broken / "checkpoints").split("_")[1])
    assert saved == EVERY < logged < STEPS, (saved, logged)  # killed between two checkpoints
    done = run("plain", 1, _args(tmp_path, broken, "2", "--resume"))
    assert "DataLoader: 2 worker processes per rank (--num-workers)" in done.stderr
    resumed, expected = losses(broken), losses(full)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(resumed, expected):
        assert (a["mode"], a["loss"], a["losses"]) == (b["mode"], b["loss"], b["losses"]), a["step"]


@pytest.mark.slow
def test_auto_is_stated_in_the_log(tmp_path):
    out = tmp_path / "synthetic"
    done = run("plain", 1, ["pretrain", "--model-config", str(tiny_config(tmp_path)), "--deepspeed-config",
                            str(deepspeed_config(tmp_path, "zero2_fp32")), "--output", str(out), "--max-steps", "1",
                            "--synthetic-scenes", "16", "--micro-batch-size", "4"])
    assert "DataLoader: 0 worker processes per rank (--num-workers auto: the data are in memory)" in done.stderr
