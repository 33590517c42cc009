"""`kernels/` is installed as `semvlp.kernels`, never as a top-level `kernels`, editable and as a wheel."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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


def test_wheel_ships_semvlp_kernels_and_no_top_level_kernels(tmp_path):
    env = dict(os.environ, SEMVLP_SKIP_CUDA_BUILD="1")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(ROOT)], env=env, check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("semvlp-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "semvlp/kernels/__init__.py" in names
    assert not [n for n in names if n.startswith("kernels/")]

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    semvlp_file, kernels_file, top_level = _probe(tmp_path, env=dict(os.environ, PYTHONPATH=str(site)))
    assert Path(semvlp_file) == site / "semvlp" / "__init__.py"
    assert Path(kernels_file) == site / "semvlp" / "kernels" / "__init__.py"
    assert top_level == "None"
    assert not (site / "kernels").exists()


@pytest.mark.parametrize("module", ["semvlp", "semvlp.ops", "semvlp.nn", "semvlp.model", "semvlp.data"])
def test_importing_semvlp_does_not_import_triton(module, tmp_path):
    code = f"import sys, {module}; print('triton' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
