"""The `semvlp data synth`, `semvlp data vocab` and `semvlp export` commands, and the pretrain command line."""

import json
import subprocess
import sys

import pytest

from semvlp.cli import build_parser, main
from semvlp.data.corpus import load_corpus
from semvlp.data.tokenizer import WordPieceTokenizer


def test_data_synth_writes_every_requested_format(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--train", "6", "--val", "2", "--novel", "2",
                 "--formats", "tsv,npz"]) == 0
    assert "train 6 images" in capsys.readouterr().out
    assert (tmp_path / "features.tsv").is_file() and (tmp_path / "features_npz").is_dir()
    assert not (tmp_path / "features.h5").exists()
    assert len(load_corpus(tmp_path, "novel").features) == 10


def test_data_synth_rejects_an_unknown_format(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--train", "2", "--formats", "parquet"]) == 2
    assert "semvlp: error: formats: expected some of" in capsys.readouterr().err


def test_data_vocab_trains_on_captions_and_questions(tmp_path, capsys):
    main(["data", "synth", "--out", str(tmp_path), "--train", "20", "--val", "1", "--novel", "1"])
    (tmp_path / "extra.txt").write_text("a hexagon beside a red circle\n")
    assert main(["data", "vocab", "--corpus", str(tmp_path / "captions_train.json"),
                 str(tmp_path / "vqa_questions_train.json"), str(tmp_path / "extra.txt"),
                 "--out", str(tmp_path / "vocab"), "--vocab-size", "200"]) == 0
    assert "vocab.txt" in capsys.readouterr().out
    tokenizer = WordPieceTokenizer(tmp_path / "vocab" / "vocab.txt")
    ids = tokenizer.encode_batch(["how many circles are there?"])[0].ids
    assert tokenizer.unk_id not in ids.tolist()


def test_pretrain_command_line_defaults_and_the_launchers_local_rank():
    args = build_parser().parse_args(["--local_rank=1", "pretrain", "--model-config", "m.json", "--deepspeed-config",
                                      "d.json", "--output", "out", "--max-steps", "5"])
    assert (args.data, args.mode_schedule, args.mode_ratio, args.mode_granularity) == ("synthetic", "alternate",
                                                                                         "1:1", "step")
    assert not args.resume and not args.skip_bad_records and args.seed == 0


def test_module_entry_point_lists_the_commands():
    done = subprocess.run([sys.executable, "-m", "semvlp.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for name in ("demo", "pretrain", "data", "export"):
        assert name in done.stdout


def test_bad_records_stop_a_run_unless_skipped(tmp_path):
    """The run fails on a bad record with the file and record named; --skip-bad-records counts it."""
    main(["data", "synth", "--out", str(tmp_path), "--train", "8", "--val", "1", "--novel", "1"])
    captions = json.loads((tmp_path / "captions_train.json").read_text())
    captions["annotations"][0]["caption"] = ""
    (tmp_path / "captions_train.json").write_text(json.dumps(captions))
    from semvlp.data.records import BadRecordError, BadRecords
    from semvlp.train.run_data import load_run_data

    with pytest.raises(BadRecordError, match=r"captions_train.json: annotation 0 \(id 0\): the caption is empty"):
        load_run_data(str(tmp_path), BadRecords(), feature_dim=64)
    bad = BadRecords(skip=True)
    data = load_run_data(str(tmp_path), bad, feature_dim=64)
    assert bad.total == 1 and "captions_train.json: 1 empty caption" in bad.summary()
    assert set(data.held_out) == {"val", "novel"}
