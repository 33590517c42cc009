"""The DeepSpeed config loader names the file it cannot read, and why."""

import pytest

from semvlp.train.ds_config import load_deepspeed_config


@pytest.mark.parametrize("content,message", [
    ('{"train_micro_batch_size_per_gpu": 4', r"deepspeed_config: .*ds.json is not valid JSON"),
    ("", r"deepspeed_config: .*ds.json is not valid JSON"),
    ("[4]", r"deepspeed_config: .*ds.json holds a JSON list, expected an object"),
    (b'{"optimizer": "\xff"}', r"deepspeed_config: .*ds.json is not UTF-8 text"),
])
def test_a_bad_file_is_named(tmp_path, content, message):
    path = tmp_path / "ds.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message):
        load_deepspeed_config(path, max_steps=10)


def test_a_missing_file_and_a_folder_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"deepspeed_config: .*absent.json does not exist"):
        load_deepspeed_config(tmp_path / "absent.json", max_steps=10)
    with pytest.raises(ValueError, match=rf"deepspeed_config: {tmp_path} is a directory, expected a JSON file"):
        load_deepspeed_config(tmp_path, max_steps=10)
