"""On a GPU: one plain process pretrains the tiny model under DeepSpeed (NCCL, ZeRO-2 bf16 and ZeRO-3 fp16 with
loss scaling), alternating modes, and the loss falls. Needs deepspeed, pillow, matplotlib and tensorboard on
that machine (carried as wheels); skipped without them."""

import pytest

for _module in ("deepspeed", "PIL", "matplotlib", "torch.utils.tensorboard"):
    pytest.importorskip(_module)

from semvlp.data.synthetic import write_synthetic  # noqa: E402
from semvlp.data.tokenizer import train_vocab  # noqa: E402

from pretrain_runs import REPO, deepspeed_config, losses, pretrain_args, run  # noqa: E402


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["zero2_bf16", "zero3_fp16"])
def test_pretraining_on_one_gpu_lowers_the_loss(tmp_path, name):
    splits = write_synthetic(tmp_path / "data", {"train": 200, "val": 20, "novel": 20}, seed=2)
    vocab = train_vocab([c.text for im in splits["train"] for c in im.captions], tmp_path / "vocab", vocab_size=200)
    out = tmp_path / name
    run("plain", 1, pretrain_args(tmp_path / "data", REPO / "configs/model/tiny.json", deepspeed_config(tmp_path, name),
                                  out, 40, 1, "--micro-batch-size", "32", "--vocab", str(vocab), "--export"))
    records = losses(out)
    assert len(records) == 40 and {r["mode"] for r in records} == {"single", "two"}
    assert sum(r["loss"] for r in records[-5:]) < sum(r["loss"] for r in records[:5])
    assert (out / "export" / "model.safetensors").is_file()
