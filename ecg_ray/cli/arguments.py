"""Argument types the ``ecg-ray`` subcommands share: lists, worker counts, locations (paths or URIs)."""

from __future__ import annotations

import argparse


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def workers(text: str) -> tuple[int, int | None]:
    """``4`` -> (4, None); ``2-8`` -> (2, 8) for elastic training."""
    try:
        if "-" in text:
            low, high = (int(x) for x in text.split("-", 1))
            if not 1 <= low <= high:
                raise ValueError
            return low, high
        return int(text), None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX workers, got {text!r}") from None


def location(text: str) -> str:
    """A local path (made absolute) or a cloud URI such as s3://bucket/runs (kept as given)."""
    from ecg_ray.storage import StorageError, normalize

    try:
        return normalize(text)
    except StorageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def str_list(text: str) -> list[str]:
    return [x for x in text.replace(" ", "").split(",") if x]
