"""The paper's published PTB-XL numbers and the names the report gives models and methods."""

from __future__ import annotations

from typing import Any

# Published PTB-XL "all" (71 statements) test macro AUC, mean and std over runs, from Mehari &
# Strodthoff (2022), "Self-supervised representation learning from 12-lead ECG data", Computers in
# Biology and Medicine 141:105114; numbers as collected in ../shared/reference/paper-protocol.md.
# Keyed by (our encoder name, pretraining method or None for no pretraining): the "none" row holds
# supervised training in the fine-tune column and a linear head on a random encoder in the linear one.
# The reference scores a label it cannot evaluate as 0.5, so these are on evaluation.json's
# ``test_macro_auc_reference`` scale, not on ``test_macro_auc`` (which skips such labels).
PUBLISHED: dict[tuple[str, str | None], dict[str, Any]] = {
    ("xresnet1d50", None): {"finetune": (0.924, 0.005), "linear": (0.721, 0.016)},
    ("xresnet1d50", "simclr"): {"finetune": (0.927, 0.003), "linear": (0.883, 0.003)},
    ("xresnet1d50", "byol"): {"finetune": (0.929, 0.002), "linear": (0.878, 0.002)},
    ("cpc_4fc2lstm", None): {"finetune": (0.932, 0.003), "linear": (0.711, 0.007)},
    ("cpc_4fc2lstm", "cpc"): {"finetune": (0.942, 0.001), "linear": (0.927, 0.001), "note": "CPC on CinC2020"},
}
PAPER_LABELS = 71  # PTB-XL "all": the 71 SCP statements the published numbers are over
PUBLISHED_MODEL_NAMES = {"xresnet1d50": "xresnet1d50", "cpc_4fc2lstm": "4FC+2LSTM+2FC"}
# The paper's methods in the order and with the names of its tables; methods it does not report follow,
# alphabetically. Any method's name comes first from the evaluation files (``method_display``, written
# from the method registry); these names serve results written before that field existed.
PAPER_METHOD_ORDER = (None, "simclr", "byol", "swav", "cpc")
PAPER_METHOD_NAMES = {"simclr": "SimCLR", "byol": "BYOL", "swav": "SwAV", "cpc": "CPC"}
NO_PRETRAINING = "none (supervised / random init)"
# The job that evaluates a linear head on a randomly initialised encoder (run without --encoder):
# the baseline every pretrained linear number is judged against.
RANDOM_INIT_LINEAR_JOBS = {"xresnet1d50": "jobs/paper/eval-linear.yaml", "cpc_4fc2lstm": "jobs/paper/cpc-linear.yaml"}


def method_label(method: str | None, display: str | None = None) -> str:
    """A method as tables print it: its display name when the results carry one, else its name."""
    return NO_PRETRAINING if method is None else (display or PAPER_METHOD_NAMES.get(method, method))


def method_order(method: str | None) -> tuple[int, str]:
    order = PAPER_METHOD_ORDER
    return (order.index(method), "") if method in order else (len(order), str(method))


def model_label(encoder: str) -> str:
    """Our encoder name, with the paper's name for it where that differs."""
    paper = PUBLISHED_MODEL_NAMES.get(encoder, encoder)
    return encoder + (f" ({paper})" if paper != encoder else "")
