"""Why a fused piece must not run for a module: a child it reads is wrapped, hooked, offloaded or not loaded.

The fused forwards read `query.weight`, `dense.bias`, `LayerNorm.weight` ... directly instead of calling the
children. That is only the same computation when each child is a plain torch layer whose forward nobody
intercepts: a LoRA or quantized wrapper, a forward/backward hook, or accelerate's offloading hook (which moves
the weights in just before the child's forward) would be computed around. `wrapped_reason` says which, so the
patch leaves such a module as it is and the fused forward runs the original code for such a call.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as torch_module

from ...nn.layer_norm import LayerNorm
from .class_layer_norm import ClassLevelLayerNorm

# Children each fused piece reads directly, with the exact classes it knows how to read.
_LINEAR = (nn.Linear,)
_NORM = (nn.LayerNorm, LayerNorm, ClassLevelLayerNorm)
ATTENTION_CHILDREN = {"query": _LINEAR, "key": _LINEAR, "value": _LINEAR}
DENSE_ADD_NORM_CHILDREN = {"dense": _LINEAR, "LayerNorm": _NORM}
INTERMEDIATE_CHILDREN = {"dense": _LINEAR}

_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def hooked_reason(module: nn.Module, name: str) -> str | None:
    """Why the module's own forward must run (hooks, accelerate's hook, meta parameters), or None."""
    if hasattr(module, "_hf_hook"):
        return f"{name} carries an accelerate hook ({type(module._hf_hook).__name__}: offloading or device placement)"
    hooks = [table.strip("_").replace("_", " ") for table in _HOOK_TABLES if getattr(module, table)]
    if hooks:
        return f"{name} has {', '.join(hooks)} registered"
    if any(p.is_meta for p in module.parameters(recurse=False)):
        return f"{name} has parameters on the meta device (not loaded)"
    return None


def wrapped_reason(module: nn.Module, children: dict[str, tuple[type, ...]]) -> str | None:
    """Why the fused forward of `module`, which reads `children` directly, would not compute what the original
    forward does; None when it would."""
    if hasattr(module, "_hf_hook"):
        return f"the module carries an accelerate hook ({type(module._hf_hook).__name__}) that replaces its forward"
    if any(getattr(torch_module, table) for table in _GLOBAL_HOOKS):
        return "global module hooks are registered (they would not see the children's calls)"
    for name, allowed in children.items():
        child = getattr(module, name, None)
        if type(child) not in allowed:
            return (f"{name} is a {type(child).__module__}.{type(child).__name__}, not a plain "
                    f"{' or '.join(c.__name__ for c in allowed)} (a wrapper or subclass whose forward the fused "
                    "path would skip)")
        reason = hooked_reason(child, name)
        if reason is not None:
            return reason
    return None
