"""Which torch optimizer class wrote a state dict: torch does not record it.

A class is named only when exactly one known class fits the param groups' hyperparameter keys
(and values, for Adam vs AdamW) and the state's slot names; otherwise the class is recorded as
:data:`UNKNOWN`. Keys are checked both ways: every key a class always writes must be there, and
every key present must be one the class writes in some torch version (or one schedulers add).
So another optimizer with the same slots (RMSprop with momentum vs SGD, Adagrad vs anything) is
never mistaken for a known one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["UNKNOWN", "optimizer_class"]

#: recorded when the state dict does not determine the class (restoring by name does not need it)
UNKNOWN = "unknown"

# keys in param groups that are not hyperparameters: the parameters, their names, and what
# torch.optim.lr_scheduler and swa_utils add
_ADDED_KEYS = frozenset({"params", "param_names", "initial_lr", "max_lr", "min_lr", "base_momentum",
                         "max_momentum", "swa_lr"})


@dataclass(frozen=True)
class _Signature:
    name: str
    core: frozenset[str]  # hyperparameters every torch version writes
    later: frozenset[str]  # hyperparameters some versions write
    slots: frozenset[str]  # state slots it may write
    values: Mapping[str, Any] = field(default_factory=dict)  # keys that must be present with these values


def _sig(name: str, core: str, later: str, slots: str, **values: Any) -> _Signature:
    return _Signature(f"torch.optim.{name}", frozenset(core.split()), frozenset(later.split()),
                      frozenset(slots.split()), values)


# Checked against torch 2.13 by tests/test_hardening_torch.py; older versions write subsets of `later`.
_ADAM = ("lr betas eps weight_decay amsgrad", "foreach maximize capturable differentiable fused decoupled_weight_decay",
         "step exp_avg exp_avg_sq max_exp_avg_sq")
_SIGNATURES = (
    _sig("SGD", "lr momentum dampening weight_decay nesterov", "foreach maximize differentiable fused",
         "momentum_buffer"),
    # AdamW is Adam with decoupled weight decay; before torch wrote the flag, the two are indistinguishable
    _sig("Adam", *_ADAM, decoupled_weight_decay=False),
    _sig("AdamW", *_ADAM, decoupled_weight_decay=True),
    _sig("RMSprop", "lr alpha eps weight_decay momentum centered", "foreach maximize differentiable capturable",
         "step square_avg momentum_buffer grad_avg"),
    _sig("Adagrad", "lr lr_decay weight_decay initial_accumulator_value eps", "foreach maximize differentiable fused",
         "step sum"),
    _sig("Adadelta", "lr rho eps weight_decay", "foreach maximize differentiable capturable",
         "step square_avg acc_delta"),
    _sig("Adamax", "lr betas eps weight_decay", "foreach maximize differentiable capturable", "step exp_avg exp_inf"),
    _sig("NAdam", "lr betas eps weight_decay momentum_decay",
         "foreach maximize differentiable capturable decoupled_weight_decay", "step mu_product exp_avg exp_avg_sq"),
    _sig("RAdam", "lr betas eps weight_decay", "foreach maximize differentiable capturable decoupled_weight_decay",
         "step exp_avg exp_avg_sq"),
    _sig("ASGD", "lr lambd alpha t0 weight_decay", "foreach maximize differentiable capturable", "step eta mu ax"),
    _sig("Rprop", "lr etas step_sizes", "foreach maximize differentiable capturable", "step prev step_size"),
    _sig("SparseAdam", "lr betas eps", "maximize", "step exp_avg exp_avg_sq"),
    _sig("Adafactor", "lr beta2_decay eps d weight_decay", "foreach maximize", "step row_var col_var variance"),
    _sig("Muon", "lr weight_decay momentum nesterov ns_coefficients eps ns_steps adjust_lr_fn", "", "momentum_buffer"),
)


def _fits(sig: _Signature, groups: list[Mapping[Any, Any]], slots: set[Any]) -> bool:
    if not slots <= sig.slots:
        return False
    for group in groups:
        keys = set(group) - _ADDED_KEYS
        if not sig.core <= keys or not keys <= sig.core | sig.later:
            return False
        # `is`: True must not match 1, nor False 0
        if any(k not in group or group[k] is not v for k, v in sig.values.items()):
            return False
    return True


def optimizer_class(opt_sd: Mapping[str, Any]) -> str:
    """``torch.optim.<Name>`` when exactly one known class fits ``opt_sd``, else :data:`UNKNOWN`.
    ``opt_sd`` has already been checked to hold a ``param_groups`` list of dicts and a ``state`` dict."""
    groups = list(opt_sd["param_groups"])
    slots = {k for s in opt_sd["state"].values() if isinstance(s, Mapping) for k in s}
    if not groups:
        return UNKNOWN
    matches = [sig.name for sig in _SIGNATURES if _fits(sig, groups, slots)]
    return matches[0] if len(matches) == 1 else UNKNOWN
