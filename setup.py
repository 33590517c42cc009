"""Build script for semvlp.

The Python packages are always installed. `kernels/` (Triton) is installed as the subpackage
`semvlp.kernels`, never as a top-level module. The CUDA extension `semvlp._C` is built from `csrc/`
only where `cuda_extensions()` finds a CUDA toolkit and a CUDA build of torch.
"""

import os

from setuptools import find_packages, setup


def cuda_extensions():
    """The CUDA extensions to build here, or [] (pure-Python install) with the reason printed."""
    if os.environ.get("SEMVLP_SKIP_CUDA_BUILD") == "1":
        print("semvlp: SEMVLP_SKIP_CUDA_BUILD=1, installing without semvlp._C")
        return []
    print("semvlp: csrc/ has no sources yet, installing without semvlp._C")
    return []


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
    python_requires=">=3.10",
    packages=find_packages(include=["semvlp", "semvlp.*"]) + ["semvlp.kernels"],
    package_dir={"semvlp.kernels": "kernels"},
    install_requires=[
        "torch>=2.4",
        "triton; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "deepspeed",
        "tokenizers",
        "safetensors",
        "numpy",
        "tqdm",
        "h5py",
        "pillow",
        "matplotlib",
        "tensorboard",
    ],
    entry_points={"console_scripts": ["semvlp = semvlp.cli:main"]},
    ext_modules=extensions,
    cmdclass=build_commands(extensions),
)
