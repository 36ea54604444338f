"""Self-supervised methods: one module each, registered by name when defined.

Adding a method is adding its file here (see :mod:`ecg_ray.methods.registry` for what it
declares); nothing else in the package lists methods. Importing this package imports no torch:
the method modules load when the registry is first consulted (``methods()``, ``METHODS``).
"""

from __future__ import annotations

from ecg_ray.methods.registry import MethodChoices, get_method, import_method_module, methods


def build_method(config, fs: float):
    """Encoder from ``config.model`` wrapped by the method named in ``config.method.name``."""
    from ecg_ray.models import build_encoder

    import_method_module(config.method.module)  # a method defined outside the package registers on import
    return get_method(config.method.name)(config, build_encoder(config.model.encoder), fs)


def __getattr__(name: str):
    if name == "METHODS":  # every registered method by name (imports each method module once)
        return methods()
    if name in ("Method", "Batch"):
        from ecg_ray.methods import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", "Batch", "Method", "MethodChoices", "build_method", "get_method", "methods"]
