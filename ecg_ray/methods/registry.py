"""The method registry: every ``Method`` subclass with a ``name`` registers itself on definition.

A method is the unit of extension (as in solo-learn and lightly): its file declares everything
the rest of the package needs about it, as class attributes of its ``Method`` subclass:

- ``name`` (the ``method.name`` value and the config section's key) and ``display_name``;
- ``config_class``: the dataclass of its config section (top-level ``<name>:`` in a job file,
  ``--set <name>.key=value``), with ``RULES`` for its value ranges; ``None`` for no settings;
- ``encoder_output``: the encoders it accepts (``"pooled"``: (B, D) window features, e.g.
  xresnet1d; ``"sequence"``: ``encode``/``context`` over time steps, e.g. cpc_4fc2lstm);
- ``batch_fields``: the batch fields its step needs beside ``signal`` (``record_index``,
  ``patient_index``, ``crop_start``, ``labels``, ``store_index``); the stream provides those asked for.

``config.py``, the CLI's ``--method`` choices, the reports (through the run files), the
benchmarks and the parametrised tests take all of it from here: adding a method is adding its
file under ``ecg_ray/methods/`` (imported by :func:`discover`), or, outside the package, importing
a module that defines it before the config is loaded (``method.module`` names it for the workers).
"""

from __future__ import annotations

import importlib

from ecg_ray.discovery import import_submodules
from ecg_ray.errors import ConfigError

#: what a method's step may ask the stream for, beside ``signal`` (``store_index``: which store of a
#: mixture the crop came from; with ``record_index`` it names a record uniquely)
BATCH_FIELDS = ("record_index", "patient_index", "crop_start", "labels", "store_index")
ENCODER_OUTPUTS = ("pooled", "sequence")

_METHODS: dict[str, type] = {}
_discovered = False


def register(cls: type) -> type:
    """Add a method class (``Method.__init_subclass__`` calls this for every subclass with a ``name``)."""
    import dataclasses

    name = cls.name
    if not name.isidentifier() or name != name.lower():
        raise TypeError(f"{cls.__qualname__}: method name {name!r} must be a lower-case identifier "
                        "(it is a config section's key)")
    known = _METHODS.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"method {name!r} is defined twice: {known.__module__}.{known.__qualname__} and "
                        f"{cls.__module__}.{cls.__qualname__}")
    if cls.config_class is not None and not dataclasses.is_dataclass(cls.config_class):
        raise TypeError(f"{cls.__qualname__}.config_class must be a dataclass (its config section)")
    unknown = sorted(set(cls.batch_fields) - set(BATCH_FIELDS))
    if unknown:
        raise TypeError(f"{cls.__qualname__}.batch_fields: unknown field(s) {unknown}; the stream provides "
                        f"{', '.join(BATCH_FIELDS)}")
    if cls.encoder_output not in ENCODER_OUTPUTS:
        raise TypeError(f"{cls.__qualname__}.encoder_output must be one of {ENCODER_OUTPUTS}")
    _METHODS[name] = cls
    return cls


def discover() -> None:
    """Import every module of ``ecg_ray.methods`` once, so that each method file registers itself."""
    global _discovered
    if not _discovered:
        import_submodules("ecg_ray.methods")
        _discovered = True


def import_method_module(module: str) -> None:
    """Import ``method.module`` (a method defined outside the package registers itself on import)."""
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"method.module: cannot import {module!r} ({exc})") from None


def methods() -> dict[str, type]:
    """Every registered method by name, the package's own first (sorted), then others as registered."""
    discover()
    return dict(_METHODS)


def get_method(name: str) -> type:
    registered = methods()
    if name not in registered:
        raise ConfigError(f"method.name: unknown method {name!r}; choose one of {', '.join(registered)}")
    return registered[name]


def method_display(name: str | None) -> str | None:
    """How tables name method ``name`` (its ``display_name``); the name itself for an unknown one, None for None."""
    if name is None:
        return None
    known = methods().get(name)
    return (known.display_name or name) if known is not None else name


def method_sections() -> dict[str, type | None]:
    """Config section dataclass of each registered method (None: no settings)."""
    return {name: cls.config_class for name, cls in methods().items()}


class MethodChoices:
    """``--method`` choices that consult the registry only when used (building the CLI imports no torch)."""

    def __contains__(self, name) -> bool:
        return name in methods()

    def __iter__(self):
        return iter(methods())

    def __len__(self) -> int:
        return len(methods())
