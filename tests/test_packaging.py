"""`kernels/` is installed as `semvlp.kernels`, never as a top-level `kernels`, editable and as a wheel; the wheel
carries the configs and the licence; the core runs without the extras; a CUDA toolkit of another major version
than torch's gives a pure-Python install."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import importlib.util, semvlp, semvlp.kernels; "
         "print(semvlp.__file__); print(semvlp.kernels.__file__); "
         "print(importlib.util.find_spec('kernels'))")


def _probe(tmp_path, env=None):
    """Imports from a neutral directory, so the checkout itself is not on sys.path."""
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                            check=True)
    return result.stdout.split("\n")[:3]


def test_editable_install_maps_kernels_into_semvlp(tmp_path):
    semvlp_file, kernels_file, top_level = _probe(tmp_path)
    assert Path(kernels_file) == ROOT / "kernels" / "__init__.py"
    assert Path(semvlp_file) == ROOT / "semvlp" / "__init__.py"
    assert top_level == "None"


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """(the wheel, the folder it is installed into), built once for the module."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, SEMVLP_SKIP_CUDA_BUILD="1")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(ROOT)], env=env, check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("semvlp-*.whl"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return wheel, site


def test_wheel_ships_semvlp_kernels_and_no_top_level_kernels(installed_wheel, tmp_path):
    wheel, site = installed_wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert "semvlp/kernels/__init__.py" in names
    assert not [n for n in names if n.startswith("kernels/")]

    semvlp_file, kernels_file, top_level = _probe(tmp_path, env=dict(os.environ, PYTHONPATH=str(site)))
    assert Path(semvlp_file) == site / "semvlp" / "__init__.py"
    assert Path(kernels_file) == site / "semvlp" / "kernels" / "__init__.py"
    assert top_level == "None"
    assert not (site / "kernels").exists()


def test_wheel_ships_every_config_and_presets_resolve_outside_a_checkout(installed_wheel, tmp_path):
    wheel, site = installed_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = ROOT / "configs"
    shipped = {f"semvlp/configs/{p.relative_to(configs).as_posix()}" for p in configs.rglob("*.json")}
    assert "semvlp/configs/deepspeed/zero2_auto.json" in shipped and shipped <= names
    code = ("from semvlp.presets import find_config; print(find_config('tiny', 'model')); "
            "print(find_config('configs/deepspeed/zero2_auto.json', 'deepspeed')); print(find_config('nope', 'model'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(site)),
                            capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:3] == [str(site / "semvlp/configs/model/tiny.json"),
                                             str(site / "semvlp/configs/deepspeed/zero2_auto.json"), "nope"]


def test_find_config_takes_files_preset_names_and_checkout_paths(tmp_path, monkeypatch):
    from semvlp.presets import find_config, presets

    own = tmp_path / "tiny.json"
    own.write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert find_config(str(own), "model") == str(own)
    assert find_config("tiny.json", "model") == "tiny.json"  # a file in the working directory comes first
    assert find_config("base", "model") == str(ROOT / "configs/model/base.json")
    auto = "configs/deepspeed/zero2_auto.json"
    assert find_config(auto, "deepspeed") == str(ROOT / auto)
    assert find_config("elsewhere/base.json", "model") == "elsewhere/base.json"  # a path is never swapped for a preset
    assert find_config("zero2_auto", "model") == "zero2_auto"
    assert presets("model") == ["base", "tiny"]
    with pytest.raises(ValueError, match="kind: expected one of"):
        find_config("tiny", "models")


def test_the_licence_is_apache_2_and_ships_in_the_wheel(installed_wheel):
    wheel, _ = installed_wheel
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    licences = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    assert len(licences) == 1 and zipfile.ZipFile(wheel).read(licences[0]).decode() == text


def test_the_core_runs_without_the_extras(tmp_path):
    extras = ["deepspeed", "tensorboard", "matplotlib", "transformers", "huggingface_hub", "flash_attn", "liger_kernel"]
    code = (f"import sys; sys.modules.update(dict.fromkeys({extras!r})); "
            "import semvlp, semvlp.finetune.run, semvlp.eval.task_eval, semvlp.data.formats; "
            "from semvlp.cli import main; "
            "sys.exit(main(['demo', '--model-config', 'tiny', '--batch-size', '2', '--num-regions', '3']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "single-stream: loss=" in result.stdout and "two-stream: loss=" in result.stdout


def test_pretrain_without_the_train_extra_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['deepspeed'] = None; from semvlp.cli import main; "
            "main(['pretrain', '--model-config', 'tiny', '--deepspeed-config', 'zero2_auto', '--output', 'out', "
            "'--max-steps', '1'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert "semvlp pretrain needs DeepSpeed, which is not installed: pip install 'semvlp[train]'" in result.stderr


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU build of torch never builds the extension")
def test_a_toolkit_of_another_cuda_major_version_gives_a_pure_python_install(tmp_path):
    other = 12 if torch.version.cuda.split(".")[0] != "12" else 11
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    nvcc = toolkit / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {other}.8, V{other}.8.93'\n")
    nvcc.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "SEMVLP_SKIP_CUDA_BUILD"}
    env["CUDA_HOME"] = str(toolkit)
    result = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=True)
    assert f"is CUDA {other}.8 but torch" in result.stdout and "installing without semvlp._C" in result.stdout
    assert result.stdout.strip().endswith("semvlp")


@pytest.mark.parametrize("module", ["semvlp", "semvlp.ops", "semvlp.nn", "semvlp.model", "semvlp.data"])
def test_importing_semvlp_does_not_import_triton(module, tmp_path):
    code = f"import sys, {module}; print('triton' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
