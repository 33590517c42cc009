"""The precision rule: bf16 only where the hardware runs it natively (probes mocked for both CPU kinds and for
GPUs), an explicit --precision or a DeepSpeed config's explicit section wins, and every command says which."""

import json
from pathlib import Path

import pytest
import torch

from semvlp import cli
from semvlp.cli import build_parser, main
from semvlp.train import precision as precision_module
from semvlp.train.ds_config import load_deepspeed_config
from semvlp.train.options import PretrainOptions
from semvlp.train.precision import auto_precision, autocast, cpu_bf16_support, resolve_precision

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "deepspeed"
TINY = REPO / "configs" / "model" / "tiny.json"


def _cpu(monkeypatch, capability: str, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


@pytest.fixture
def avx2_cpu(monkeypatch):
    _cpu(monkeypatch, "AVX2", avx512_bf16=False, amx=False)


@pytest.fixture
def bf16_cpu(monkeypatch):
    _cpu(monkeypatch, "AVX512", avx512_bf16=True, amx=True)


def test_an_avx2_cpu_gets_fp32(avx2_cpu):
    chosen = auto_precision("cpu")
    assert chosen.name == "fp32" and chosen.dtype == torch.float32
    assert chosen.describe() == "precision: fp32 (this CPU has no native bf16: AVX2)"


def test_a_cpu_with_native_bf16_gets_bf16(bf16_cpu):
    chosen = resolve_precision("auto", "cpu")
    assert chosen.name == "bf16" and chosen.dtype == torch.bfloat16
    assert chosen.describe() == "precision: bf16 (this CPU runs bf16 natively: AVX512 + AVX-512 BF16 + AMX)"


@pytest.mark.parametrize("capability, avx512_bf16, amx, native", [
    ("AVX512", False, False, False),   # AVX-512 without the BF16 instructions: bf16 converted in software
    ("AVX512", True, False, True),
    ("AVX512", False, True, True),
    ("AVX2", True, True, False),       # ATEN_CPU_CAPABILITY=avx2 on a capable CPU: torch runs its AVX2 kernels
    ("DEFAULT", False, False, False),
])
def test_native_cpu_bf16_needs_the_instructions_and_avx512_kernels(monkeypatch, capability, avx512_bf16, amx, native):
    _cpu(monkeypatch, capability, avx512_bf16, amx)
    assert cpu_bf16_support()[0] is native
    assert auto_precision("cpu").name == ("bf16" if native else "fp32")


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_a_gpu_gets_bf16_where_it_has_bf16_units(monkeypatch, native, expected):
    monkeypatch.setattr(precision_module, "cuda_bf16_support", lambda device: (native, "Some GPU"))
    assert auto_precision("cuda").name == expected
    assert "Some GPU" in auto_precision("cuda").reason


def test_an_explicit_precision_wins_over_the_hardware(avx2_cpu):
    slow = resolve_precision("bf16", "cpu")
    assert slow.name == "bf16" and "emulated" in slow.reason
    assert resolve_precision("fp32", "cpu").name == "fp32"


def test_an_explicit_fp32_wins_on_a_bf16_cpu(bf16_cpu):
    assert resolve_precision("fp32", "cpu").describe() == "precision: fp32 (--precision fp32)"
    assert resolve_precision("bf16", "cpu").describe() == "precision: bf16 (--precision bf16)"


def test_bad_precisions_are_named():
    with pytest.raises(ValueError, match=r"precision: expected one of .*'fp64'"):
        resolve_precision("fp64", "cpu")
    with pytest.raises(ValueError, match="precision: fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")


def test_autocast_computes_matrix_products_in_the_chosen_dtype():
    x, w = torch.randn(3, 4), torch.randn(4, 2)
    assert (x @ w).dtype == torch.float32
    with autocast(resolve_precision("bf16", "cpu"), "cpu"):
        assert (x @ w).dtype == torch.bfloat16
    with autocast(resolve_precision("fp32", "cpu"), "cpu"):
        assert (x @ w).dtype == torch.float32


# The DeepSpeed config and the flag.

def _load(name, **kwargs):
    return load_deepspeed_config(CONFIGS / f"{name}.json", max_steps=10, has_gpu=False, **kwargs)


def test_an_auto_config_gets_fp32_on_an_avx2_cpu(avx2_cpu):
    run = _load("zero2_auto")
    assert run.dtype == torch.float32 and run.deepspeed["bf16"] == {"enabled": False}
    assert run.precision.describe() == "precision: fp32 (this CPU has no native bf16: AVX2)"


def test_an_auto_config_gets_bf16_on_a_bf16_cpu(bf16_cpu):
    from deepspeed.runtime.config import DeepSpeedConfig

    run = _load("zero2_auto")
    assert run.dtype == torch.bfloat16 and run.deepspeed["bf16"] == {"enabled": True}
    assert DeepSpeedConfig(run.deepspeed).bfloat16_config.enabled


def test_a_config_that_enables_bf16_keeps_it_under_auto(avx2_cpu):
    run = _load("zero2_bf16")
    assert run.dtype == torch.bfloat16
    assert "set by zero2_bf16.json" in run.precision.reason and "emulated" in run.precision.reason
    assert _load("zero2_fp32").dtype == torch.float32


def test_the_flag_wins_over_the_config(bf16_cpu):
    run = _load("zero2_bf16", precision="fp32")
    assert run.dtype == torch.float32 and run.deepspeed["bf16"] == {"enabled": False}
    run = _load("zero2_fp32", precision="bf16")
    assert run.dtype == torch.bfloat16 and run.deepspeed["bf16"] == {"enabled": True}
    run = load_deepspeed_config(CONFIGS / "zero2_fp16.json", max_steps=10, has_gpu=False, precision="fp32")
    assert run.dtype == torch.float32 and run.deepspeed["fp16"]["enabled"] is False
    run = _load("zero2_auto", precision="fp32")
    assert run.dtype == torch.float32 and run.deepspeed["bf16"] == {"enabled": False}


def test_bad_precision_sections_are_named(tmp_path):
    config = json.loads((CONFIGS / "zero2_bf16.json").read_text())
    config["bf16"]["enabled"] = "yes"
    (tmp_path / "ds.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"ds.json: bf16.enabled must be true, false or \"auto\", got 'yes'"):
        load_deepspeed_config(tmp_path / "ds.json", max_steps=10)
    config["bf16"]["enabled"], config["fp16"] = True, {"enabled": True}
    (tmp_path / "ds.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="enables both bf16 and fp16"):
        load_deepspeed_config(tmp_path / "ds.json", max_steps=10, has_gpu=True)
    config["bf16"], config["fp16"] = True, {}
    (tmp_path / "ds.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"ds.json: bf16 must be an object like \{\"enabled\": true\}, got True"):
        load_deepspeed_config(tmp_path / "ds.json", max_steps=10)


def test_pretrain_takes_the_flag_and_defaults_to_auto():
    required = ["pretrain", "--model-config", "m.json", "--deepspeed-config", "d.json", "--output", "out",
                "--max-steps", "1"]
    assert build_parser().parse_args(required + ["--precision", "fp32"]).precision == "fp32"
    assert build_parser().parse_args(required).precision == PretrainOptions.precision == "auto"


def test_the_makefile_pretrains_with_an_auto_config():
    makefile = (REPO / "Makefile").read_text()
    assert "MAIN_DEEPSPEED_CONFIG := configs/deepspeed/zero2_auto.json" in makefile
    assert "--deepspeed-config $(MAIN_DEEPSPEED_CONFIG)" in makefile


# The plain-PyTorch commands.

def test_demo_announces_and_uses_the_precision(avx2_cpu, monkeypatch, capsys):
    # Recorded where the demo calls it: DeepSpeed code that earlier tests ran in this process calls torch.autocast
    # itself (ZeRO-3 replaces F.linear).
    seen, real_autocast = [], cli.autocast

    def recording(precision, device):
        context = real_autocast(precision, device)
        seen.append(getattr(context, "fast_dtype", None))
        return context
    monkeypatch.setattr(cli, "autocast", recording)
    assert main(["demo", "--model-config", str(TINY), "--batch-size", "2", "--num-regions", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "precision: fp32 (this CPU has no native bf16: AVX2)"
    assert seen == [None, None]  # fp32: no autocast context
    seen.clear()
    assert main(["demo", "--model-config", str(TINY), "--batch-size", "2", "--num-regions", "3",
                 "--precision", "bf16"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("precision: bf16 (--precision bf16")
    assert seen == [torch.bfloat16, torch.bfloat16]


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory):
    """A small data folder in the real formats, its vocab and a small model config."""
    from semvlp.data.synthetic import write_synthetic
    from semvlp.data.tokenizer import train_vocab
    from semvlp.model import SemVLPConfig

    folder = tmp_path_factory.mktemp("task")
    splits = write_synthetic(folder, {"train": 6, "val": 4}, seed=0)
    vocab = train_vocab([t.text for s in splits.values() for im in s for t in im.captions], folder / "vocab",
                        vocab_size=200)
    config = SemVLPConfig(vocab_size=sum(1 for _ in open(vocab)), hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=64, max_position_embeddings=48, cross_layers=[1],
                          visual_feat_dim=64, max_regions=8, num_region_labels=4, num_qa_labels=4)
    config.save(folder / "config.json")
    return folder, vocab, config


def test_finetune_runs_its_forward_in_the_chosen_precision_with_fp32_weights(task_folder, monkeypatch):
    from semvlp.data.tokenizer import WordPieceTokenizer
    from semvlp.finetune import loop
    from semvlp.finetune.run import TaskData

    folder, vocab, config = task_folder
    dataset = TaskData(folder, WordPieceTokenizer(vocab, max_length=48), config.visual_feat_dim).dataset("itm", "train")
    seen, real_loss = [], loop.task_loss
    monkeypatch.setattr(loop, "task_loss", lambda task, logits, targets: seen.append(logits.dtype) or
                        real_loss(task, logits, targets))
    model = loop.init_model("itm", config, None, None, seed=0)
    for name in ("bf16", "fp32"):
        records = loop.finetune(model, dataset, loop.FinetuneOptions("itm", steps=2, batch_size=4, precision=name),
                                progress=False)
        assert len(records) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert seen == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="precision: expected one of"):
        loop.FinetuneOptions("itm", precision="fp64")


@pytest.mark.parametrize("cpu, expected", [("bf16_cpu", "bf16"), ("avx2_cpu", "fp32")])
def test_the_finetune_command_announces_its_choice_and_trains_outside_autocast(task_folder, tmp_path, monkeypatch,
                                                                              capsys, request, cpu, expected):
    import semvlp.finetune.run

    request.getfixturevalue(cpu)
    folder, vocab, _ = task_folder
    calls = []

    def fake_run_finetune(options, *args, **kwargs):
        # finetune() casts each step itself; an autocast context around the loop would keep stale cast weights.
        calls.append((options.precision, torch.is_autocast_enabled("cpu")))
        return {"val": {"accuracy": 0.5}}

    monkeypatch.setattr(semvlp.finetune.run, "run_finetune", fake_run_finetune)
    assert main(["finetune", "--task", "itm", "--data", str(folder), "--model-config", str(folder / "config.json"),
                 "--vocab", str(vocab), "--output", str(tmp_path / "out"), "--steps", "1"]) == 0
    assert calls == [(expected, False)]
    assert capsys.readouterr().out.startswith(f"precision: {expected} (this CPU ")


def test_the_eval_command_evaluates_in_the_chosen_precision(task_folder, tmp_path, monkeypatch, capsys, bf16_cpu):
    import semvlp.finetune.run
    from semvlp.finetune import loop

    folder, vocab, config = task_folder
    loop.save_finetuned(loop.init_model("itm", config, None, None, seed=0), loop.FinetuneOptions("itm"),
                        tmp_path / "model")
    seen = []
    monkeypatch.setattr(semvlp.finetune.run, "evaluate", lambda *args: seen.append(
        torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32) or {"accuracy": 0.5})
    command = ["eval", "--model", str(tmp_path / "model"), "--data", str(folder), "--splits", "val", "--vocab",
               str(vocab)]
    assert main(command) == 0 and main(command + ["--precision", "fp32"]) == 0
    assert seen == [torch.bfloat16, torch.float32]
    assert capsys.readouterr().out.startswith("precision: bf16 (this CPU runs bf16 natively")
