"""save_pretrained / from_pretrained / push_to_hub of the pretraining and downstream models, and the Hugging Face
BERT import from shards, .bin files and Hub ids (no network: the Hub is mocked)."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from semvlp import SemVLPConfig, SemVLPForPretraining, SemVLPModel, load_hf_bert
from semvlp.data import random_batch
from semvlp.model import SemVLPForImageTextMatching, SemVLPForPairedReasoning, SemVLPForQuestionAnswering

DOWNSTREAM = {
    "qa": lambda config: SemVLPForQuestionAnswering(config, 6),
    "itm": SemVLPForImageTextMatching,
    "nlvr2": SemVLPForPairedReasoning,
}


def _changed(model):
    """The model with every parameter and buffer moved off its initial value, so a load that leaves one as
    initialised shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) * 0.1 + 0.01)
    return model.eval()


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("mode", ["single", "two"])
def test_pretraining_model_round_trip(tmp_path, tiny_config, mode):
    model = _changed(SemVLPForPretraining(tiny_config))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\nred\n")
    folder = model.save_pretrained(tmp_path / "saved", vocab=vocab, data="synthetic", results={"val/itm": 0.75})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "vocab.txt"]
    assert (folder / "vocab.txt").read_text() == vocab.read_text()
    loaded = SemVLPForPretraining.from_pretrained(folder)
    assert not loaded.training and loaded.config == tiny_config
    _assert_same_state(model, loaded)
    batch = random_batch(tiny_config, 4, text_len=9, num_regions=4)
    with torch.no_grad():
        expected, actual = model(batch, mode=mode), loaded(batch, mode=mode)
    assert expected.losses.keys() == actual.losses.keys()
    for task in expected.losses:
        assert torch.equal(expected.losses[task], actual.losses[task]), task


@pytest.mark.parametrize("task", sorted(DOWNSTREAM))
def test_downstream_model_round_trip(tmp_path, tiny_config, task):
    model = _changed(DOWNSTREAM[task](tiny_config))
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)
    _assert_same_state(model, loaded)
    batch = random_batch(tiny_config, 4, text_len=9, num_regions=4)
    inputs = batch.input_ids, batch.region_features, batch.region_boxes, batch.layout
    with torch.no_grad():
        for mode in ("single", "two"):
            assert torch.equal(model(*inputs, mode=mode), loaded(*inputs, mode=mode))
    if task == "qa":
        assert loaded.num_answers == 6 and json.loads((tmp_path / "config.json").read_text())["num_answers"] == 6


def test_config_json_and_model_card(tmp_path, tiny_config):
    SemVLPForPretraining(tiny_config).save_pretrained(tmp_path, data="runs/data", training={"steps": 300},
                                                      results={"val": {"single": {"itm_accuracy": 0.8125}}})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "semvlp" and config["architectures"] == ["SemVLPForPretraining"]
    assert {k: v for k, v in config.items() if k not in ("model_type", "architectures")} == tiny_config.to_dict()
    assert SemVLPConfig.load(tmp_path / "config.json") == tiny_config  # as before the layout
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: semvlp\n")
    assert "SemVLPForPretraining.from_pretrained" in card
    assert json.dumps(config, indent=2) in card  # the config, whole
    assert "## Data\n\nruns/data" in card and "- steps: 300" in card
    assert "| val/single/itm_accuracy | 0.8125 |" in card
    assert "vocab.txt" not in card and not (tmp_path / "vocab.txt").exists()


def test_a_plain_config_json_loads_and_other_folders_are_refused(tmp_path, tiny_config):
    model = _changed(SemVLPForImageTextMatching(tiny_config))
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds a SemVLPForImageTextMatching, not a SemVLPForPretraining"):
        SemVLPForPretraining.from_pretrained(tmp_path)
    # A config.json of the SemVLPConfig fields alone (an export from before the layout) loads.
    tiny_config.save(tmp_path / "config.json")
    _assert_same_state(model, SemVLPForImageTextMatching.from_pretrained(tmp_path))
    with pytest.raises(ValueError, match=r"config.json: expected \['num_answers'\] for a SemVLPForQuestionAnswering"):
        SemVLPForQuestionAnswering.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(ValueError, match="model_type 'bert' is not 'semvlp'.*from_hf_bert"):
        SemVLPForImageTextMatching.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"name_or_path: .*absent does not exist"):
        SemVLPForImageTextMatching.from_pretrained(tmp_path / "absent")


def test_mismatched_weights_and_strict(tmp_path, tiny_config):
    model = _changed(SemVLPForPretraining(tiny_config))
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    dropped = next(k for k in state if k.startswith("grounding_head."))
    del state[dropped]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"do not fit the SemVLPForPretraining.*Missing key.*{dropped}"):
        SemVLPForPretraining.from_pretrained(tmp_path)
    loaded = SemVLPForPretraining.from_pretrained(tmp_path, strict=False).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not torch.equal(loaded[dropped], model.state_dict()[dropped])  # left as initialised
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="expected model.safetensors or model.safetensors.index.json in"):
        SemVLPForPretraining.from_pretrained(tmp_path)


def test_sharded_safetensors_load(tmp_path, tiny_config):
    model = _changed(SemVLPForImageTextMatching(tiny_config))
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, str(tmp_path / name))
    index = {"metadata": {}, "weight_map": {k: name for name, names in shards.items() for k in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    _assert_same_state(model, SemVLPForImageTextMatching.from_pretrained(tmp_path))
    index["weight_map"][keys[0]] = "../elsewhere.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="shard '../elsewhere.safetensors' is not a file name in the index's folder"):
        SemVLPForImageTextMatching.from_pretrained(tmp_path)


class _FakeApi:
    """HfApi's create_repo and upload_folder, recording what would be uploaded."""

    calls = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id, repo_type, folder_path, commit_message, revision, create_pr):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        self.calls.append(("upload_folder", repo_id, repo_type, files, commit_message))
        return "https://huggingface.co/owner/tiny/commit/1"


def test_push_to_hub_uploads_the_saved_folder(tmp_path, tiny_config, monkeypatch):
    _FakeApi.calls = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", SimpleNamespace(HfApi=_FakeApi))
    model = _changed(SemVLPForQuestionAnswering(tiny_config, 3))
    assert model.push_to_hub("owner/tiny", private=True) == "https://huggingface.co/owner/tiny/commit/1"
    (create, repo, private, exist_ok), upload = _FakeApi.calls
    assert (create, repo, private, exist_ok) == ("create_repo", "owner/tiny", True, True)
    assert upload[1:3] == ("owner/tiny", "model")
    assert sorted(upload[3]) == ["README.md", "config.json", "model.safetensors"]
    (tmp_path / "model.safetensors").write_bytes(upload[3]["model.safetensors"])
    (tmp_path / "config.json").write_bytes(upload[3]["config.json"])
    _assert_same_state(model, SemVLPForQuestionAnswering.from_pretrained(tmp_path))


def test_without_huggingface_hub_push_and_hub_ids_say_how_to_install(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    model = SemVLPForImageTextMatching(tiny_config)
    with pytest.raises(ImportError, match=r"push_to_hub needs the optional package huggingface_hub: "
                                          r"pip install 'semvlp\[hf\]'"):
        model.push_to_hub("owner/tiny")
    with pytest.raises(ImportError, match=r"'owner/tiny'.*pip install 'semvlp\[hf\]'"):
        SemVLPForImageTextMatching.from_pretrained("owner/tiny")
    model.save_pretrained(tmp_path)  # local folders need no huggingface_hub
    _assert_same_state(model, SemVLPForImageTextMatching.from_pretrained(tmp_path))


def test_from_pretrained_downloads_a_hub_id(tmp_path, tiny_config, monkeypatch):
    model = _changed(SemVLPForPairedReasoning(tiny_config))
    model.save_pretrained(tmp_path / "snapshot")
    calls = []

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, kwargs))
        assert "model.safetensors" in allow_patterns and not any(p.endswith(".bin") for p in allow_patterns)
        return str(tmp_path / "snapshot")

    monkeypatch.setitem(sys.modules, "huggingface_hub", SimpleNamespace(snapshot_download=snapshot_download))
    loaded = SemVLPForPairedReasoning.from_pretrained("owner/nlvr2", revision="v1")
    _assert_same_state(model, loaded)
    assert calls == [("owner/nlvr2", {"revision": "v1", "cache_dir": None, "token": None,
                                      "local_files_only": False})]


def test_a_hub_id_that_cannot_be_fetched_is_named(tiny_config, monkeypatch):
    def snapshot_download(repo_id, **kwargs):
        raise FileNotFoundError("offline and not in the cache")

    monkeypatch.setitem(sys.modules, "huggingface_hub", SimpleNamespace(snapshot_download=snapshot_download))
    with pytest.raises(ValueError, match=r"name_or_path: 'owner/absent' is no local folder, and the Hub repository "
                                         r"of that name could not be fetched \(FileNotFoundError: offline"):
        SemVLPForPretraining.from_pretrained("owner/absent")


# --- Hugging Face BERT checkpoints: shards, .bin files, Hub ids -------------------------------------------------

@pytest.fixture
def hf_bert(tmp_path):
    """A tiny BertForPreTraining saved as one safetensors file in tmp_path/single."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=20)
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(config).eval()
    hf.save_pretrained(tmp_path / "single")
    return tmp_path / "single"


def _imported(path) -> dict:
    """The tensors of a SemVLPForPretraining that the checkpoint at `path` filled."""
    model = SemVLPForPretraining(SemVLPModel.from_hf_bert(path).config)
    _, unfilled = load_hf_bert(model, path)
    return {k: v for k, v in model.state_dict().items() if k not in unfilled and "feature_" not in k}


def _assert_same_import(expected, actual):
    assert expected.keys() == actual.keys() and any(k.startswith("mlm_head.") for k in expected)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def _copy_config(source, folder):
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    return folder


def test_hf_bert_from_sharded_safetensors(tmp_path, hf_bert):
    state = load_file(str(hf_bert / "model.safetensors"))
    folder = _copy_config(hf_bert, tmp_path / "sharded")
    keys = sorted(state)
    shards = {"model-00001-of-00003.safetensors": keys[:10], "model-00002-of-00003.safetensors": keys[10:30],
              "model-00003-of-00003.safetensors": keys[30:]}
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, str(folder / name))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: name for name, names in shards.items() for k in names}}))
    _assert_same_import(_imported(hf_bert), _imported(folder))
    # A shard that lacks a tensor its index assigns to it is named.
    save_file({k: state[k] for k in keys[10:29]}, str(folder / "model-00002-of-00003.safetensors"))
    with pytest.raises(ValueError, match=r"the index in .*sharded names 1 tensors its shards lack"):
        SemVLPModel.from_hf_bert(folder)


def test_hf_bert_from_bin_and_sharded_bin(tmp_path, hf_bert):
    state = load_file(str(hf_bert / "model.safetensors"))
    expected = _imported(hf_bert)
    single = _copy_config(hf_bert, tmp_path / "bin")
    torch.save(state, single / "pytorch_model.bin")
    sharded = _copy_config(hf_bert, tmp_path / "bin_sharded")
    keys = sorted(state)
    torch.save({k: state[k] for k in keys[:20]}, sharded / "pytorch_model-00001-of-00002.bin")
    torch.save({k: state[k] for k in keys[20:]}, sharded / "pytorch_model-00002-of-00002.bin")
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {
        k: f"pytorch_model-0000{1 if i < 20 else 2}-of-00002.bin" for i, k in enumerate(keys)}}))
    for folder in (single, sharded):
        _assert_same_import(expected, _imported(folder))


class _Payload:
    """A pickle that runs code when unpickled without weights_only."""

    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PAYLOAD_MARK'], 'w').write('ran')",))


def test_a_bin_with_a_malicious_pickle_is_refused(tmp_path, hf_bert, monkeypatch):
    mark = tmp_path / "ran"
    monkeypatch.setenv("PAYLOAD_MARK", str(mark))
    folder = _copy_config(hf_bert, tmp_path / "evil")
    state = dict(load_file(str(hf_bert / "model.safetensors")))
    state["bert.embeddings.word_embeddings.weight"] = _Payload()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model.bin was refused: it holds objects other than tensors"):
        SemVLPModel.from_hf_bert(folder)
    assert not mark.exists()
    torch.load(folder / "pytorch_model.bin", weights_only=False)  # the payload is live: an unsafe load runs it
    assert mark.read_text() == "ran"


def test_hf_bert_from_a_hub_id(tmp_path, hf_bert, monkeypatch):
    bin_only = _copy_config(hf_bert, tmp_path / "bin_only")
    torch.save(load_file(str(hf_bert / "model.safetensors")), bin_only / "pytorch_model.bin")
    repos = {"owner/bert": hf_bert, "owner/bert-bin": bin_only}
    calls = []

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, tuple(allow_patterns)))
        wants_bin = any(p.endswith(".bin") for p in allow_patterns)
        # A real snapshot holds only the files the patterns match: a bin-only repository has none of the first.
        return str(repos[repo_id] if wants_bin or repo_id == "owner/bert" else tmp_path / "empty")

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((hf_bert / "config.json").read_text())
    monkeypatch.setitem(sys.modules, "huggingface_hub", SimpleNamespace(snapshot_download=snapshot_download))
    expected = _imported(hf_bert)
    for repo in repos:
        _assert_same_import(expected, _imported(repo))
    # Safetensors first; the .bin files only from the repository without safetensors.
    fetched_bin = [(repo, any(p.endswith(".bin") for p in patterns)) for repo, patterns in calls]
    assert fetched_bin == [("owner/bert", False)] * 2 + [("owner/bert-bin", False), ("owner/bert-bin", True)] * 2
