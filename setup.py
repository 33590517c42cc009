"""Build script for semvlp.

The Python packages are always installed. `kernels/` (Triton) is installed as the subpackage
`semvlp.kernels`, never as a top-level module, and `configs/` (model and DeepSpeed presets) as the package data
`semvlp/configs`. The CUDA extension `semvlp._C` is built from `csrc/` only where `cuda_extensions()` finds a
CUDA toolkit of the same major version as torch's CUDA build; otherwise the install is pure Python.
"""

import glob
import os
import re
import shutil
import subprocess

from setuptools import find_packages, setup

DEFAULT_CUDA_ARCHS = "80;90"


def cuda_toolkit() -> str | None:
    """Root of a CUDA toolkit holding bin/nvcc and include/cuda_runtime.h, or None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in candidates:
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")) and os.path.isfile(
                os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


def nvcc_cuda_version(home: str) -> str | None:
    """The CUDA release of `home`/bin/nvcc ("13.0"), or None if it cannot be read."""
    try:
        out = subprocess.run([os.path.join(home, "bin", "nvcc"), "--version"], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"release (\d+\.\d+)", out)
    return found.group(1) if found else None


def arch_flags(archs: str) -> tuple[list[str], str]:
    """SEMVLP_CUDA_ARCHS ("80;90") -> nvcc -gencode flags (SASS for each, PTX of the newest for later GPUs)
    and the matching TORCH_CUDA_ARCH_LIST ("8.0;9.0")."""
    entries = [a.strip() for a in archs.replace(",", ";").split(";") if a.strip()]
    if not entries or not all(re.fullmatch(r"\d{2,3}", a) for a in entries):
        raise ValueError(f"SEMVLP_CUDA_ARCHS: expected compute capabilities like '80;90', got {archs!r}")
    entries = sorted(set(entries), key=int)
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in entries]
    flags.append(f"-gencode=arch=compute_{entries[-1]},code=compute_{entries[-1]}")
    return flags, ";".join(f"{a[:-1]}.{a[-1]}" for a in entries)


def cuda_extensions():
    """The CUDA extensions to build here, or [] (pure-Python install) with the reason printed."""
    if os.environ.get("SEMVLP_SKIP_CUDA_BUILD") == "1":
        print("semvlp: SEMVLP_SKIP_CUDA_BUILD=1, installing without semvlp._C")
        return []
    try:
        import torch
    except ImportError:
        print("semvlp: torch is not installed at build time, installing without semvlp._C")
        return []
    if torch.version.cuda is None:
        print(f"semvlp: torch {torch.__version__} is a CPU build, installing without semvlp._C")
        return []
    home = cuda_toolkit()
    if home is None:
        print("semvlp: no CUDA toolkit (nvcc) found (set CUDA_HOME), installing without semvlp._C")
        return []
    nvcc = nvcc_cuda_version(home)
    if nvcc is None or nvcc.split(".")[0] != torch.version.cuda.split(".")[0]:
        # torch refuses to compile against a toolkit of another major version, and the result would not load.
        print(f"semvlp: the CUDA toolkit in {home} is CUDA {nvcc or 'of an unknown version'} but torch "
              f"{torch.__version__} is built for CUDA {torch.version.cuda}; installing without semvlp._C "
              f"(the Triton and PyTorch backends still work). To build it, point CUDA_HOME at a CUDA "
              f"{torch.version.cuda.split('.')[0]}.x toolkit or install the torch build for your toolkit.")
        return []
    # torch.utils.cpp_extension reads both variables when imported.
    os.environ["CUDA_HOME"] = home
    flags, arch_list = arch_flags(os.environ.get("SEMVLP_CUDA_ARCHS", DEFAULT_CUDA_ARCHS))
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    from torch.utils.cpp_extension import CUDAExtension

    sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True) + glob.glob("csrc/**/*.cu", recursive=True))
    print(f"semvlp: building semvlp._C with {home} for sm {arch_list} "
          f"(MAX_JOBS={os.environ.get('MAX_JOBS', 'all cores')})")
    return [CUDAExtension(
        "semvlp._C",
        sources,
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo", "--use_fast_math", *flags]},
    )]


def build_commands(extensions):
    if not extensions:
        return {}
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


extensions = cuda_extensions()

setup(
    name="semvlp",
    version="0.1.0",
    description="SemVLP-style vision-language pretraining with fused Triton and CUDA kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    # numpy 2.4 (the pinned one in requirements-dev.txt) needs Python 3.11.
    python_requires=">=3.11",
    packages=find_packages(include=["semvlp", "semvlp.*"]) + ["semvlp.kernels", "semvlp.configs"],
    package_dir={"semvlp.kernels": "kernels", "semvlp.configs": "configs"},
    package_data={"semvlp.configs": ["deepspeed/*.json", "model/*.json"]},
    # The core: the model, kernels, data formats, fine-tuning, evaluation and the demo.
    install_requires=[
        "torch>=2.4",
        "triton; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "numpy",
        "safetensors",
        "tokenizers",
        "tqdm",
        "h5py",
        "pillow",
    ],
    extras_require={
        # `semvlp pretrain` and the ablation: DeepSpeed, TensorBoard logs, loss curves.
        "train": ["deepspeed", "tensorboard", "matplotlib"],
        # semvlp.integrations.hf: patching transformers models, BERT import, save/from_pretrained.
        "hf": ["transformers>=5", "huggingface_hub"],
        # Extra providers for bench/. NVIDIA apex has no usable wheel (the PyPI `apex` is another project);
        # build it from source (github.com/NVIDIA/apex) to benchmark against it.
        "bench": ["flash-attn", "liger-kernel", "matplotlib"],
        # easy-VQA's pictures and questions ship in this package.
        "easy-vqa": ["easy-vqa"],
        # `semvlp data features`: grid features of transformers backbones, torchvision Faster R-CNN regions.
        "features": ["transformers>=5", "torchvision", "pillow"],
    },
    entry_points={"console_scripts": ["semvlp = semvlp.cli:main"]},
    ext_modules=extensions,
    cmdclass=build_commands(extensions),
)
