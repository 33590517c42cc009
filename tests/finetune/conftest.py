"""A small data folder laid out as real data is: COCO captions with integer ids and no synthetic extras, and a test
split whose questions come without annotations; a tiny model config and vocabulary for it; fine-tuned models."""

import json
from pathlib import Path

import pytest

from semvlp.cli import main
from semvlp.data.synthetic import write_synthetic
from semvlp.data.tokenizer import train_vocab
from semvlp.model import SemVLPConfig

from finetune_runs import finetune_args

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=48, cross_layers=[1], visual_feat_dim=64, max_regions=8, num_region_labels=4,
            num_qa_labels=4, initializer_range=0.08)


def _as_coco(path: Path, first_id: int) -> None:
    """Rewrites a captions file as COCO's own: images with id/width/height/file_name, annotations with id,
    image_id and caption only (no caption kind, no hard negatives)."""
    data = json.loads(path.read_text())
    images = [{"id": im["id"], "width": im["width"], "height": im["height"], "file_name": im["file_name"]}
              for im in data["images"]]
    annotations = [{"id": first_id + i, "image_id": ann["image_id"], "caption": ann["caption"]}
                   for i, ann in enumerate(data["annotations"])]
    path.write_text(json.dumps({"images": images, "annotations": annotations}))


@pytest.fixture(scope="session")
def coco_data(tmp_path_factory):
    """(folder, splits): train and val with annotations; test with questions only."""
    folder = tmp_path_factory.mktemp("coco")
    splits = write_synthetic(folder, {"train": 40, "val": 12, "test": 12}, seed=4)
    for n, split in enumerate(splits):
        _as_coco(folder / f"captions_{split}.json", 100000 * (n + 1))
    (folder / "vqa_annotations_test.json").unlink()
    texts = [t.text for s in splits.values() for im in s for t in im.captions + im.questions]
    texts += ["both images contain neither only one the left right image has more than same number of"]
    vocab = train_vocab(texts, folder / "vocab", vocab_size=200)
    SemVLPConfig(vocab_size=sum(1 for _ in open(vocab)), **TINY).save(folder / "config.json")
    return folder, splits


@pytest.fixture(scope="session")
def finetuned(coco_data, tmp_path_factory):
    """task -> the output folder of a two-step fine-tune on `coco_data` (made on first use)."""
    folder, _ = coco_data
    made = {}

    def get(task: str) -> Path:
        if task not in made:
            out = tmp_path_factory.mktemp(f"finetuned_{task}")
            assert main(finetune_args(folder, out, task)) == 0
            made[task] = out
        return made[task]

    return get
