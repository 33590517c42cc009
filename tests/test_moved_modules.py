"""Modules that moved in the re-layout keep their old import paths, with a FutureWarning naming the new one."""

import importlib
import sys

import pytest

from semvlp._moved import MOVED_MODULES


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_old_module_path_forwards_to_the_new_module(old):
    new_name, renamed = MOVED_MODULES[old]
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f"{old} moved to {new_name}"):
        module = importlib.import_module(old)
    new = importlib.import_module(new_name)
    public = [n for n in getattr(new, "__all__", dir(new)) if not n.startswith("_")]
    assert public, new_name
    for name in public:
        assert getattr(module, name) is getattr(new, name)
    for old_attribute, new_attribute in renamed.items():
        assert getattr(module, old_attribute) is getattr(new, new_attribute)


def test_names_imported_from_an_old_path_are_the_new_objects():
    from semvlp.model.finetuning import SemVLPForQuestionAnswering

    with pytest.warns(FutureWarning):
        sys.modules.pop("semvlp.model.downstream", None)
        from semvlp.model.downstream import SemVLPForQuestionAnswering as old
    assert old is SemVLPForQuestionAnswering


def test_a_missing_name_in_a_moved_module_is_an_attribute_error():
    with pytest.warns(FutureWarning):
        sys.modules.pop("semvlp.data.packing", None)
        module = importlib.import_module("semvlp.data.packing")
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name
