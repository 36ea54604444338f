"""The ``README.md`` model card of a safetensors export, generated from its ``config.json``.

Hugging Face Hub style: YAML front matter (``library_name``, ``license``, ``tags``) then what the
model is, its input, how to load it and embed a recording, and how it was trained.
"""

from __future__ import annotations

import json
from typing import Any


def _seconds(samples: int, fs: float) -> str:
    return f"{samples / fs:.2f} s"


def _front_matter(config: dict[str, Any]) -> str:
    tags = ["ecg", "electrocardiogram", "self-supervised", "time-series", "feature-extraction", "ecg_ray",
            str(config["method"]).lower(), str(config["architecture"]).lower()]
    if config.get("lead_masking"):
        tags.append("lead-masking")
    lines = ["---", "library_name: ecg_ray", "license: other", "pipeline_tag: feature-extraction", "tags:"]
    lines += [f"- {json.dumps(tag)}" for tag in dict.fromkeys(tags)]
    lines.append("---")
    return "\n".join(lines)


def _corpus_lines(corpus: dict[str, Any]) -> list[str]:
    stores = corpus.get("stores") or []
    if not stores:
        return ["The run's config names no store."]
    lines = ["| store | datasets | records | hours | rate |", "|---|---|---:|---:|---:|"]
    for store in stores:
        if store.get("available"):
            datasets = ", ".join(f"{name} ({count})" for name, count in store["per_dataset"].items())
            lines.append(f"| `{store['path']}` | {datasets} | {store['records']} | {store['hours']:.2f} | "
                         f"{store['fs']:g} Hz |")
        else:
            lines.append(f"| `{store['path']}` | (not readable at export time) | | | |")
    folds = corpus.get("train_folds")
    lines.append("")
    lines.append(f"Training folds: {', '.join(map(str, folds)) if folds else 'all'}"
                 + (f"; datasets: {', '.join(corpus['dataset_filter'])}" if corpus.get("dataset_filter") else "")
                 + ". Records and hours are the stores' totals.")
    return lines


def model_card(config: dict[str, Any]) -> str:
    """The model card (Markdown with YAML front matter) of an export whose config.json is ``config``."""
    fs = float(config["sampling_rate_hz"])
    leads = config["leads"]
    run = config.get("config") or {}
    train, optim = run.get("train") or {}, run.get("optim") or {}
    selection = config["selection"]
    chosen = ("the latest epoch" if selection["metric"] == "latest"
              else f"the best epoch by {selection['metric']} = {selection['value']:.4f}")
    window = config["window"]
    windows = ("the whole record as one window" if window == 0 else
               f"sliding windows of {window} samples ({_seconds(window, fs)}) every {config['stride']} samples "
               f"({_seconds(config['stride'], fs)})")
    masking = ("yes (RandomLeadMask): missing leads are zeroed by `embed`" if config.get("lead_masking") else
               "no: `embed` refuses a recording with missing leads unless `missing_leads=\"zero\"`")
    example_leads = ", ".join(f'"{lead}"' for lead in leads)
    parts = [
        _front_matter(config),
        "",
        f"# {config['architecture']} ECG encoder ({config['method_display']})",
        "",
        f"The `{config['architecture']}` encoder in this folder reads {len(leads)}-lead ECG; it was pretrained without labels with "
        f"{config['method_display']} (`{config['method']}`) by ecg_ray "
        f"{config['ecg_ray_version']}; these are the weights of epoch {config['epoch']}, {chosen}. It maps an ECG "
        f"window to a {config['feature_dim']}-dimensional feature vector ({config['parameters']:,} parameters, "
        f"{config['tensors']} tensors).",
        "",
        "## Input",
        "",
        "| | |",
        "|---|---|",
        f"| sampling rate | {fs:g} Hz |",
        f"| leads (channel order) | {', '.join(leads)} |",
        f"| units | {config['units']} |",
        f"| training crop | {config['input_length']} samples ({_seconds(config['input_length'], fs)}) |",
        f"| evaluation | {windows}, features averaged ({config['pooling']}) per record |",
        f"| normalisation | {config['normalization']['detail']} |",
        f"| trained with lead masking | {masking} |",
        "",
        "## Use",
        "",
        "```python",
        "import ecg_ray",
        "",
        "encoder = ecg_ray.load_encoder(\"path/to/this/folder\")  # torch + safetensors + ecg_ray's models; eval mode",
        "# signal: (time, leads) numpy array or tensor in mV, any rate and length (at least one window)",
        f"vector = encoder.embed(signal, fs=500, leads=[{example_leads}])  # ({config['feature_dim']},) float32",
        "per_window = encoder.embed(signal, fs=500, leads=[...], pool=\"windows\")  # (windows, dim)",
        "```",
        "",
        f"`embed` resamples to {fs:g} Hz with the anti-aliasing filter `ecg-ray prepare` uses, puts the leads in "
        "the order above by name, cuts the evaluation windows and averages their features. The encoder itself "
        f"takes `x` of shape (batch, {len(leads)}, time) in mV at {fs:g} Hz: `encoder(x)` gives "
        f"(batch, {config['feature_dim']}).",
        "",
        "Without ecg_ray's loader: `safetensors.torch.load_file(\"model.safetensors\")` is the state dict of "
        f"`ecg_ray.models.build_encoder({config['architecture']!r}, in_channels={config['in_channels']})`.",
        "",
        "## Training",
        "",
        f"- method: {config['method_display']} (`method.name: {config['method']}`), epoch {config['epoch']} of "
        f"{train.get('epochs', '?')}, global batch {train.get('batch_size', '?')}, optimizer "
        f"{optim.get('name', '?')} lr {optim.get('lr', '?')}",
        f"- augmentations: `{json.dumps(run.get('augmentations'))}` (null: the method's defaults)",
        "- corpus:",
        "",
        *_corpus_lines(config["training_corpus"]),
        "",
        "The full run configuration is `config` in `config.json`.",
        "",
        "## Files",
        "",
        "- `model.safetensors`: the encoder's weights",
        "- `config.json`: architecture, input, windows, normalisation, method, training corpus, run config "
        f"(`format: {config['format']}`, version {config['format_version']})",
        "- `README.md`: this card",
        "",
        "## License",
        "",
        "Not set by ecg_ray (`license: other`): the weights are derived from the training corpora above; "
        "check their licences before redistributing.",
        "",
    ]
    return "\n".join(parts)
