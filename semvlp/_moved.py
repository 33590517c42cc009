"""Import paths of modules that moved keep working, with a FutureWarning that names the new place.

`import semvlp.model.downstream` (and the like) gives a stand-in module that forwards every attribute to the
module's new home, under the attribute's new name where it was renamed.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# old module -> (new module, {old attribute name: new attribute name})
MOVED_MODULES = {
    "semvlp.model.downstream": ("semvlp.model.finetuning", {}),
    "semvlp.model.hf_import": ("semvlp.model.hf_bert", {}),
    "semvlp.nn.hf": ("semvlp.integrations.hf", {}),
    "semvlp.nn.transformer_layer": ("semvlp.integrations.hf.transformer_layer", {}),
    "semvlp.data.packing": ("semvlp.model.inputs", {}),
    "semvlp.data.batch": ("semvlp.model.inputs", {}),
    "semvlp.ops.triton_attention": ("semvlp.ops.backends.triton.attention",
                                    {"dropout_keep_mask": "attention_keep_mask"}),
    "semvlp.ops.triton_layer_norm": ("semvlp.ops.backends.triton.layer_norm",
                                     {"dropout_keep_mask": "rowwise_keep_mask"}),
    "semvlp.ops.cuda_attention": ("semvlp.ops.backends.cuda.attention", {}),
    "semvlp.ops.cuda_layer_norm": ("semvlp.ops.backends.cuda.layer_norm", {}),
}


class _Forwarder(types.ModuleType):
    def __init__(self, name: str, new_name: str, renamed: dict[str, str]):
        super().__init__(name, f"Moved to {new_name}.")
        self._new_name, self._renamed = new_name, renamed

    def __getattr__(self, attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        new_attribute = self._renamed.get(attribute, attribute)
        return getattr(importlib.import_module(self._new_name), new_attribute)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new_name, renamed = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new_name}; import it from there", FutureWarning, stacklevel=2)
        return _Forwarder(spec.name, new_name, renamed)

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
