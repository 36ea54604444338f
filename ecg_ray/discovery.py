"""Importing every module of a package once: how the method and encoder registries find their members.

A method or an encoder registers itself when its module is imported (``Method.__init_subclass__``,
``@register_encoder``), so "adding one is adding its file" needs only this: import each module of
the package, in name order so that registration order does not depend on the file system.
"""

from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package_name: str) -> None:
    """Import every module directly inside package ``package_name`` (not its subpackages' modules)."""
    package = importlib.import_module(package_name)
    for name in sorted(module.name for module in pkgutil.iter_modules(package.__path__)):
        importlib.import_module(f"{package_name}.{name}")
