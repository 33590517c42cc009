"""When the CUDA-emulator tests may skip: only without g++ or without the CUDA headers, with the reason; where
both are present a failed build fails the tests instead of skipping them."""

import pytest
from cuda_emulator import emulated


def _no_toolkit(monkeypatch, which=lambda name: None):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(emulated, "SYSTEM_TOOLKITS", ())
    monkeypatch.setattr(emulated.shutil, "which", which)


def _fake_toolkit(root, header_text=""):
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (root / "include").mkdir()
    for name in emulated.NEEDED_HEADERS:
        (root / "include" / name).write_text(header_text)
    return root


def test_without_gpp_the_reason_names_it(monkeypatch):
    real_which = emulated.shutil.which
    monkeypatch.setattr(emulated.shutil, "which", lambda name: None if name == "g++" else real_which(name))
    assert "g++ not found" in emulated.available()


def test_without_headers_the_reason_lists_where_it_looked(monkeypatch, tmp_path):
    real_which = emulated.shutil.which
    _no_toolkit(monkeypatch, lambda name: None if name == "nvcc" else real_which(name))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    reason = emulated.available()
    assert "cuda_fp16.h and cuda_bf16.h not found" in reason and str(tmp_path / "include") in reason


def test_headers_of_the_toolkit_of_nvcc_on_the_path_are_found(monkeypatch, tmp_path):
    toolkit = _fake_toolkit(tmp_path / "cuda-x")
    real_which = emulated.shutil.which
    _no_toolkit(monkeypatch, lambda name: str(toolkit / "bin" / "nvcc") if name == "nvcc" else real_which(name))
    assert emulated._cuda_include() == toolkit / "include"
    if real_which("g++") is not None:
        assert emulated.available() is None


def test_a_failed_build_with_the_tools_present_is_an_error_not_a_skip(monkeypatch, tmp_path):
    if emulated.shutil.which("g++") is None:
        pytest.skip("g++ not found on PATH: nothing is built without it")
    toolkit = _fake_toolkit(tmp_path / "cuda-broken", header_text="#error these headers do not compile\n")
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    monkeypatch.setattr(emulated, "BUILD_ROOT", tmp_path / "build")
    monkeypatch.setattr(emulated, "_LIB", None)
    monkeypatch.setattr(emulated, "_BUILD_ERROR", None)
    assert emulated.available() is None
    for _ in range(2):  # the second time reported again without compiling again
        try:
            emulated.broken_kernel_report(0)
        except RuntimeError as error:
            assert "failed to build" in str(error) and "these headers do not compile" in str(error)
        except BaseException as error:  # a pytest skip is a BaseException: it must not stand in for the failure
            pytest.fail(f"expected a RuntimeError, got {type(error).__name__}: {error}")
        else:
            pytest.fail("the build with broken headers did not fail")
