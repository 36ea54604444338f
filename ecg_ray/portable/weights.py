"""Whether a state dict fits a registered encoder (same keys and shapes), checked on the meta device.

Every reader of exported weights (torch file, safetensors folder, run checkpoint) calls
:func:`check_encoder_weights` before building the encoder, so weights that do not fit fail in the
driver, naming the first mismatched keys, instead of as a ``load_state_dict`` traceback in a worker.
"""

from __future__ import annotations

import torch

from ecg_ray.errors import CheckpointError

#: mismatched keys named in a message
_SHOWN = 3


def _listed(items: list[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def check_encoder_weights(name: str, weights: dict, source: str, in_channels: int = 12, **options) -> None:
    """Raise CheckpointError unless ``weights`` load strictly into encoder ``name`` (same keys and shapes).

    ``source`` (the file or checkpoint they came from) is named in the message with the encoder and
    the first missing, unexpected and mis-shaped keys. ``in_channels`` and ``options`` (keyword
    arguments of the encoder's factory, a safetensors export's ``encoder_options``) build the encoder
    compared with; options it does not take are refused the same way.
    """
    from ecg_ray.models import ENCODERS, build_encoder

    if name not in ENCODERS:
        raise CheckpointError(f"{source}: encoder {name!r} is not one ecg_ray builds (known: {', '.join(ENCODERS)})")
    not_tensors = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{source}: the weights of {name} hold non-tensor values at {_listed(not_tensors)}")
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        try:
            built = build_encoder(name, in_channels, **options)
        except TypeError as exc:
            raise CheckpointError(f"{source}: encoder {name} does not take options {options} ({exc})") from None
        expected = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in weights.items()}
    problems = []
    missing = [k for k in expected if k not in given]
    if missing:
        problems.append(f"{len(missing)} missing: {_listed(missing)}")
    unexpected = [k for k in given if k not in expected]
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
    shaped = [f"{k} {list(given[k])} != {list(expected[k])}" for k in expected if k in given and given[k] != expected[k]]
    if shaped:
        problems.append(f"{len(shaped)} of another shape: {_listed(shaped)}")
    if problems:
        raise CheckpointError(f"{source}: the weights do not fit encoder {name} ({'; '.join(problems)})")
