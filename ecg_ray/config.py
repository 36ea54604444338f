"""The one typed configuration schema, YAML loading and dotted ``--set key=value`` overrides.

Every section is a dataclass; loading rejects unknown keys and wrong types with a message that
names the dotted key, so a typo never silently falls back to a default (a defect of the
reference code), and values out of range (:func:`check_values`), so that they fail in the driver
before Ray starts rather than inside a worker. Ray Tune search spaces use the same dotted keys as
``--set``.

Every YAML ecg_ray reads (config files, ``--set`` values, sweep files, saved run configs) goes
through :func:`load_yaml`, whose floats follow YAML 1.2: ``1e-3`` and ``3E5`` are numbers, where
PyYAML's YAML 1.1 resolver would read them as strings.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ecg_ray.config_yaml import ConfigLoader, load_yaml, read_yaml_file, yaml_error_line  # noqa: F401
from ecg_ray.errors import ConfigError


@dataclass
class StoreSpec:
    """One store of a mixed pretraining corpus (``data.stores``)."""

    #: local path or URI of a prepared store
    path: str = ""
    #: share of each epoch = weight / sum of weights (above a store's size it is repeated, below subsampled)
    weight: float = 1.0
    #: training folds / datasets of this store (null = data.train_folds / data.datasets)
    folds: list[int] | None = None
    datasets: list[str] | None = None


@dataclass
class DataConfig:
    """Which records are streamed and how they are cut."""

    store: str | None = None
    #: pretraining on several stores mixed by weight (instead of data.store); validation and the
    #: online probe use the first store
    stores: list[StoreSpec] | None = None
    #: folds used for training (None = every record), validation and test
    train_folds: list[int] | None = None
    val_folds: list[int] | None = None
    test_folds: list[int] | None = None
    #: keep only these datasets (None = all)
    datasets: list[str] | None = None
    #: stratified share of the training records that keep their labels (Tune: data.label_fraction)
    label_fraction: float = 1.0
    label_set: str = "all"
    #: evaluation on a lead subset, e.g. [I, II, V1]: the other leads are zeroed (inputs keep 12
    #: channels) in the training crops, validation and test windows and the noise evaluation; null = all 12
    leads: list[str] | None = None
    #: training crop and evaluation window, in samples at the store's rate (2.5 s at 100 Hz); window 0 =
    #: whole records (one window per record, evaluation only; the training crops stay data.crop)
    crop: int = 250
    window: int = 250
    stride: int = 125
    crops_per_record: int = 1
    #: records per Ray Data read task (one block); null = auto: blocks of ~96 MiB, at most 8192 records
    records_per_task: int | None = None
    #: a seeded permutation of the whole selection every epoch (false: store order, for debugging)
    shuffle: bool = True
    #: records per run of the block shuffle; null = auto: 1 (a full shuffle) on local uncompressed
    #: stores, about one chunk's worth (at most records_per_task // 256) on compressed or cloud stores
    shuffle_block: int | None = None
    seed: int = 0


@dataclass
class ModelConfig:
    """Encoder choice (see ``ecg_ray.models.ENCODERS``)."""

    encoder: str = "xresnet1d50"


@dataclass
class MethodConfig:
    """Which method pretrains; its settings are the top-level section of the same name (``simclr:``)."""

    #: a registered method (``ecg_ray.methods``: every Method subclass with a name)
    name: str = "simclr"
    #: a module to import first, for a method defined outside ecg_ray (it registers on import;
    #: workers import it too), e.g. ``my_lab.methods.vicreg``
    module: str = ""


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    warmup_epochs: float = 10.0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0


@dataclass
class TrainConfig:
    """How a run is executed; the batch size is global (split over workers)."""

    epochs: int = 100
    batch_size: int = 256
    workers: int = 1
    #: elastic training: between ``workers`` and ``max_workers`` workers, as the cluster allows
    #: (the per-worker batch is then floor(batch_size / current workers))
    max_workers: int | None = None
    #: elastic training: seconds between checks for room to grow the worker group (Ray's default 60)
    resize_check_s: float = 60.0
    gpus_per_worker: float = 0.0
    #: CPUs reserved per training worker; null = 1, or less on a small local machine so that the
    #: Ray Data read tasks keep a CPU (a 2-core machine with 2 workers gets 0.5 each)
    cpus_per_worker: float | None = None
    #: intra-op threads of torch in each worker; null = Ray's default (the worker's whole CPUs, min 1)
    torch_threads: int | None = None
    #: auto = bf16 autocast on GPUs that support it (else fp16 with a grad scaler), fp32 on CPU; or fp32 /
    #: bf16 / fp16 (with a grad scaler)
    precision: str = "auto"
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    max_failures: int = 0
    #: cap on optimizer steps per epoch (null = a full pass over the training records)
    max_steps_per_epoch: int | None = None
    #: online linear probe on the validation folds (needs labels); else the held-out SSL loss
    probe: bool = True
    #: validate (probe or held-out loss) every N epochs, and on the first and last; between, the last
    #: figures are carried with ``val_epoch`` saying when they were measured
    probe_every: int = 1
    probe_max_records: int = 2000


@dataclass
class EvalConfig:
    """Downstream training and evaluation (``ecg-ray evaluate``)."""

    #: linear (frozen encoder, BN in eval mode), finetune (whole network), supervised (random init);
    #: knn, logreg: probes on cached embeddings (``ecg-ray embed``), fitted in the driver, no Ray Train run
    mode: str = "linear"
    #: classifier head: auto = linear, or the paper's 2-layer head for the CPC encoder in finetune/supervised
    head: str = "auto"
    #: finetune: epochs training only the head before all layers are trained
    head_only_epochs: int = 0
    #: finetune: discriminative learning rates, a factor per layer group from the head down
    #: (1.0 = every parameter at one lr)
    discriminative_lr_factor: float = 1.0
    #: how the factor applies: "encoder" = the whole encoder at lr x factor (CPC: LSTM x factor,
    #: per-step layers x factor^2); "layer_groups" = the reference's --discriminative_lr: lr x factor^k
    #: for the k-th layer group below the head (xresnet: stages 4..1, then the stem)
    discriminative_groups: str = "encoder"
    #: finetune with head_only_epochs > 0: the base lr of the all-layers phase (null = optim.lr); that
    #: phase restarts from the best head-only epoch (by validation macro AUC) with a fresh optimizer
    finetune_lr: float | None = None
    #: the head's output bias at the start: "default" (PyTorch's init, as the reference) or "prior" =
    #: log-odds of each label's prevalence in the training records, so that the first steps are not spent
    #: learning label frequencies (with few steps, e.g. a small store, they otherwise dominate the weights)
    head_bias_init: str = "default"
    #: labels need at least this many positives in the test folds to be scored in test_macro_auc
    #: (10 = the filter of recent ECG benchmark papers); the excluded labels are listed
    min_test_positives: int = 1
    #: exported encoder file or pretraining run directory ("" = random initialisation)
    encoder: str = ""
    pretrained: str = ""
    bootstrap: int = 1000
    #: name of this model variant in results tables and reports (default: derived)
    variant: str = ""
    #: knn / logreg: embeddings file of ``ecg-ray embed`` ("" = embed the store first, into the run directory,
    #: with eval.encoder / eval.pretrained, or a random-init model.encoder)
    embeddings: str = ""
    #: knn: neighbour counts tried; the one with the best validation macro AUC is kept
    knn_k: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 50, 100])
    #: knn: temperature T of the neighbour weights exp(cosine similarity / T)
    knn_temperature: float = 0.07
    #: logreg: inverse L2 strengths C tried (sklearn's C: mean log-loss + ||w||^2 / (2 C n))
    logreg_c: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0])
    #: logreg: L-BFGS iterations per fit
    logreg_max_iter: int = 200


@dataclass
class NoiseConfig:
    """Seeded test-time noise (robustness): every (type, SNR) pair is evaluated on the test folds."""

    types: list[str] = field(default_factory=list)
    snr_db: list[float] = field(default_factory=list)
    seed: int = 0
    mains_hz: float = 50.0


@dataclass
class Config:
    """Root of the configuration tree."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: augmentation specs, e.g. [{name: RandomResizedCrop, scale: [0.5, 1.0]}, {name: TimeOut}]
    augmentations: list[dict] | None = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    #: each registered method's settings by section name (top-level ``simclr:``, ``cpc:``, ... in YAML
    #: and ``--set simclr.temperature=0.2``), filled from the method registry; read as ``config.simclr``
    #: or ``config.section("simclr")``
    method_settings: dict[str, Any] = field(default_factory=dict, repr=False)

    def section(self, name: str) -> Any:
        """A method's settings (defaults where the config did not set them)."""
        settings = self.method_settings.get(name)
        if settings is None:
            sections = method_sections()
            if name not in sections:
                raise AttributeError(f"no method section {name!r}; registered methods: {', '.join(sections)}")
            if sections[name] is None:
                return None
            settings = self.method_settings[name] = sections[name]()
        return settings

    def __getattr__(self, name: str) -> Any:
        # Only for names that are not fields: config.simclr -> the simclr section.
        if name.startswith("_") or name == "method_settings":
            raise AttributeError(name)
        return self.section(name)


def method_sections() -> dict[str, type | None]:
    """Config section dataclass of every registered method (imports the method modules, and torch)."""
    from ecg_ray.methods.registry import method_sections as sections

    return sections()


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp, key: str):
    """Check/convert ``value`` to annotation ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple | range):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if _is_dataclass_type(tp):
        return from_dict(tp, value, prefix=key)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)  # 1e3 is a float in YAML 1.2; an integer setting takes its whole value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            # A string "1e-4" from a caller that parsed YAML 1.1 itself; a number is what was meant
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls, data: dict | None, prefix: str = ""):
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    if cls is Config and not prefix:
        return _config_from_dict(data)
    return _build(cls, data, prefix)


def _build(cls, data: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                          f"valid keys under {prefix or 'the top level'}: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def _config_from_dict(data: dict) -> Config:
    """The root config: method sections (top-level keys named like a registered method) go to ``method_settings``."""
    method = data.get("method")
    module = method.get("module") if isinstance(method, dict) else None
    if module:
        from ecg_ray.methods.registry import import_method_module

        if not isinstance(module, str):
            raise ConfigError(f"method.module: expected a module name, got {module!r}")
        import_method_module(module)  # registers the method before its section is looked up
    sections = method_sections()
    plain = {k: v for k, v in data.items() if k not in sections}
    fields = {f.name for f in dataclasses.fields(Config)} - {"method_settings"}
    unknown = sorted(set(plain) - fields)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; valid keys under the top level: "
                          f"{', '.join(sorted(fields))}, and a section per method: {', '.join(sections)}")
    config = _build(Config, plain, "")
    settings = {}
    for name, section in sections.items():
        given = data.get(name)
        if section is None:
            if given:
                raise ConfigError(f"{name}: method {name} has no settings")
            continue
        settings[name] = from_dict(section, given, prefix=name)
    config.method_settings = settings
    return config


def to_dict(config) -> dict:
    """A config as plain data (YAML, JSON, Ray's loop config); the root's method sections are top-level keys."""
    if not isinstance(config, Config):
        return dataclasses.asdict(config)
    out = {}
    for f in dataclasses.fields(Config):
        if f.name == "method_settings":
            continue
        out[f.name] = dataclasses.asdict(getattr(config, f.name)) if dataclasses.is_dataclass(
            getattr(config, f.name)) else copy.deepcopy(getattr(config, f.name))
        if f.name == "method":  # the sections follow method:, as in a job file
            for name in saved_sections(config.method.name):
                section = config.section(name)
                if section is not None:
                    out[name] = dataclasses.asdict(section)
    return out


def saved_sections(chosen: str) -> list[str]:
    """The method sections a saved config holds: the package's methods and the chosen one.

    A method defined outside the package (``method.module``) is known only to processes that imported
    its module; a worker imports only the chosen method's module, so another such method's section
    would be an unknown key there.
    """
    from ecg_ray.methods.registry import methods

    return [name for name, cls in methods().items()
            if name == chosen or cls.__module__.startswith("ecg_ray.methods.")]


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value) with the value parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {} if node.get(part) is None else node[part]
            if not isinstance(node[part], dict):
                raise ConfigError(f"{key}: {part} is not a section")
        node = node[part]
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None,
                cls=Config):
    """Defaults <- YAML file <- overrides (``["a.b=1"]`` or ``{"a.b": 1}``), validated."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        tree = read_yaml_file(path) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    for key, value in items:
        set_dotted(tree, key, value)
    noise = tree.get("noise")
    if isinstance(noise, dict):  # a single level is a one-element grid (Tune sets noise.snr_db=6)
        for key in ("snr_db", "types"):
            if key in noise and not isinstance(noise[key], list | tuple) and noise[key] is not None:
                noise[key] = [noise[key]]
    config = from_dict(cls, tree)
    if cls is Config:
        from ecg_ray.config_values import check_values

        check_method_sections(config, tree)
        check_values(config)
    return config


def check_method_sections(config: Config, tree: dict) -> None:
    """Settings for a method that is not the one chosen would be silently ignored: reject them."""
    from ecg_ray.methods.registry import get_method

    chosen = config.method.name
    get_method(chosen)  # an unknown name fails here, listing the registered methods
    stray = [name for name in method_sections() if name != chosen and tree.get(name)]
    if stray:
        raise ConfigError(f"config sets {', '.join(stray)}.* but method.name is {chosen!r}: those settings "
                          f"would be ignored; remove them or change method.name")
