"""Matching fine-tune and `semvlp eval` on COCO-style captions (integer ids, no caption kind): every caption is a
retrieval query, and a pool too small for recall@10 is an error before training, not after it."""

import json

from finetune_runs import finetune_args

from semvlp.cli import main
from semvlp.data.corpus import load_corpus
from semvlp.eval.task_eval import retrieval_pool


def test_matching_finetune_and_eval_on_coco_captions(coco_data, finetuned, tmp_path):
    folder, splits = coco_data
    model = finetuned("itm")
    results = json.loads((model / "results.json").read_text())["val"]
    assert {"accuracy", "text_to_image/R@1", "text_to_image/R@10", "image_to_text/R@5"} <= set(results)
    assert not any(key.startswith("hard/") for key in results)  # COCO captions carry no hard negatives
    # The pool holds every caption of its images: the 12 val images and all their captions.
    captions, pool = retrieval_pool(load_corpus(folder, "val"), 10)
    assert len(pool) == 10 and all(t.category is None for t in captions)
    assert len(captions) == sum(len(im.captions) for im in splits["val"] if im.record.image_id in pool)
    assert main(["eval", "--model", str(model), "--data", str(folder), "--splits", "val",
                 "--vocab", str(folder / "vocab" / "vocab.txt"), "--retrieval-images", "10",
                 "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())["val"]
    assert again.keys() == results.keys() and all(0.0 <= v <= 1.0 for v in again.values())


def test_a_pool_smaller_than_recall_at_10_fails_before_training(coco_data, tmp_path, capsys):
    folder, _ = coco_data
    args = finetune_args(folder, tmp_path / "out", "itm")
    args[args.index("--retrieval-images") + 1] = "5"
    assert main(args) == 2
    assert "num_images: the pool has 5 images with captions, fewer than the largest k (10)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
