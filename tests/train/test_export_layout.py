"""`semvlp export` / `pretrain --export` write the save_pretrained layout, which from_pretrained, fine-tuning's
load_pretrained and the CLI read; a fine-tuned folder is a from_pretrained folder too."""

import json

import torch

from semvlp import SemVLPConfig, SemVLPForPretraining
from semvlp.cli import main
from semvlp.finetune.loop import FinetuneOptions, load_finetuned, load_pretrained, save_finetuned
from semvlp.model import SemVLPForQuestionAnswering
from semvlp.train.checkpoint import LATEST, export_safetensors
from semvlp.train.manifest import write_manifest

TINY = SemVLPConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                    max_position_embeddings=24, visual_feat_dim=6, max_regions=8, num_region_labels=5,
                    num_qa_labels=3)


def _stage0_checkpoint(root):
    """A ZeRO stage 0 fp32 checkpoint as semvlp saves one: the module's state, config.json and the manifest."""
    torch.manual_seed(0)
    model = SemVLPForPretraining(TINY)
    folder = root / "step_00000002"
    folder.mkdir(parents=True)
    torch.save({"module": model.state_dict()}, folder / "mp_rank_00_model_states.pt")
    (folder / "config.json").write_text(json.dumps(TINY.to_dict()))
    write_manifest(folder)
    (root / LATEST).write_text("step_00000002")
    return model


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_export_writes_the_pretrained_layout(tmp_path):
    model = _stage0_checkpoint(tmp_path / "checkpoints")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n")
    path = export_safetensors(tmp_path / "checkpoints", tmp_path / "export", vocab=vocab, data="synthetic",
                              results={"val/single/itm_accuracy": 0.625})
    out = path.parent
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "vocab.txt"]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["SemVLPForPretraining"]
    card = (out / "README.md").read_text()
    assert "## Data\n\nsynthetic" in card and "| val/single/itm_accuracy | 0.6250 |" in card
    assert "- checkpoint: step_00000002" in card
    _assert_same_state(model, SemVLPForPretraining.from_pretrained(out))
    config, state = load_pretrained(out)  # what `semvlp finetune --init` reads
    assert config == TINY and state.keys() == model.state_dict().keys()


def test_the_export_command_copies_the_vocab(tmp_path, capsys):
    _stage0_checkpoint(tmp_path / "checkpoints")
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    assert main(["export", "--checkpoints", str(tmp_path / "checkpoints"), "--out", str(tmp_path / "export"),
                 "--vocab", str(tmp_path / "vocab.txt")]) == 0
    assert (tmp_path / "export" / "vocab.txt").read_text() == "[PAD]\n"
    assert (tmp_path / "export" / "README.md").is_file()


def test_a_finetuned_folder_loads_with_from_pretrained(tmp_path):
    torch.manual_seed(0)
    model = SemVLPForQuestionAnswering(TINY, 3)
    options = FinetuneOptions("qa", "two", steps=5, answers=["crimson", "azure", "two"])
    save_finetuned(model, options, tmp_path)
    _assert_same_state(model, SemVLPForQuestionAnswering.from_pretrained(tmp_path))
    again, saved_options = load_finetuned(tmp_path)
    _assert_same_state(model, again)
    assert saved_options == options
    card = (tmp_path / "README.md").read_text()
    assert "- task: qa" in card and "- mode: two" in card and "crimson" not in card
