"""Authorization: policy files → a compiled snapshot that decides."""

from proxy.policy.engine import Decision, PolicySnapshot, compile_policy
from proxy.policy.model import PolicyError, Rule, load_policy

__all__ = ["Decision", "PolicyError", "PolicySnapshot", "Rule", "compile_policy", "load_policy"]
