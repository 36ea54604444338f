"""The one YAML parser of ecg_ray (config files, ``--set`` values, sweep files, saved run configs).

PyYAML's safe loader with YAML 1.2 floats: ``1e-3`` and ``3E5`` are numbers, where PyYAML's YAML 1.1
resolver would read them as strings. Files are read with one-line errors for a missing path, a
directory, binary content or bad YAML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ecg_ray.errors import ConfigError

#: YAML 1.2's float forms: PyYAML (YAML 1.1) needs a dot and a signed exponent, so it reads 1e-3,
#: 3E5 and -.5 as strings; the 1.1 sexagesimal floats (1:30.0) are left out, as in YAML 1.2.
_YAML12_FLOAT = re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats (see :data:`_YAML12_FLOAT`); everything else as SafeLoader."""


_FLOAT_TAG = "tag:yaml.org,2002:float"
# Copy the resolver table before changing it: SafeLoader's own table must stay as it is.
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _YAML12_FLOAT, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML text safely, with YAML 1.2 numbers (the one parser for every YAML ecg_ray reads)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where it is."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """Parse a local YAML file; a missing path, a directory, binary content or bad YAML is one ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path} not found")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a YAML file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    # YAML is text: a NUL byte or undecodable bytes mean a binary file given by mistake.
    if text is None or "\x00" in text:
        raise ConfigError(f"{what} {path} is not a YAML text file (binary content)")
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: invalid YAML at {yaml_error_line(exc)}") from None
