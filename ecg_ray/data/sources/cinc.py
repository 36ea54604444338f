"""PhysioNet/CinC Challenge 2020 and 2021 format: a directory tree of WFDB ``.hea`` + ``.mat``.

One tree may mix all challenge sources (CPSC, CPSC-extra, INCART, PTB, PTB-XL, Georgia,
Chapman-Shaoxing, Ningbo); the dataset of each record follows from its id prefix. Labels are
the SNOMED-CT codes of the header line ``# Dx: code,code,...``; rates range 257-1000 Hz and
lengths 6 s to 30 min, all kept whole and resampled to the store's rate.
"""

from __future__ import annotations

import re
from pathlib import Path

from ecg_ray.data.signal import standardize
from ecg_ray.data.sources.base import Record, Source, stable_fold
from ecg_ray.data.sources.wfdb_io import read_wfdb
from ecg_ray.errors import RecordError, SourceError

# Id prefix -> dataset name, longest prefix first. PTB-XL records are "HR<ecg_id>".
_PREFIXES = (("HR", "ptbxl"), ("JS", None), ("A", "cpsc"), ("Q", "cpsc-extra"), ("I", "incart"),
             ("S", "ptb"), ("E", "georgia"))
# Chapman-Shaoxing is JS00001-JS10646 in the 2021 release; the Ningbo records follow.
_CHAPMAN_LAST = 10646


def dataset_of(record_id: str) -> str:
    """Name of the challenge source a record id belongs to ("unknown" for foreign ids)."""
    for prefix, name in _PREFIXES:
        if record_id.startswith(prefix) and record_id[len(prefix):].isdigit():
            if name is None:  # JS: split by number
                return "chapman-shaoxing" if int(record_id[2:]) <= _CHAPMAN_LAST else "ningbo"
            return name
    return "unknown"


def ptbxl_ecg_id(record_id: str) -> int | None:
    """PTB-XL's ecg_id for a CinC PTB-XL record (HR00001 -> 1), used for patient exclusion."""
    return int(record_id[2:]) if dataset_of(record_id) == "ptbxl" else None


def parse_comments(comments: list[str]) -> dict[str, str]:
    """``# Key: value`` header comment lines as a dict (keys lower-case)."""
    out = {}
    for line in comments:
        match = re.match(r"\s*#?\s*([A-Za-z]+)\s*:\s*(.*)$", line)
        if match:
            out[match.group(1).lower()] = match.group(2).strip()
    return out


class CincSource(Source):
    """Reader for one or more CinC-format directory trees."""

    kind = "cinc"

    def __init__(self, roots: str | Path | list, fs_out: float = 100.0):
        super().__init__(fs_out)
        roots = roots if isinstance(roots, list | tuple) else [roots]
        self.roots = [Path(r) for r in roots]
        for root in self.roots:
            if not root.is_dir():
                raise SourceError(f"{root}: not a directory")
        self._headers = sorted(
            (str(h.with_suffix("")) for root in self.roots for h in root.rglob("*.hea")),
        )
        if not self._headers:
            raise SourceError(f"no .hea files under {', '.join(map(str, self.roots))}")

    def refs(self) -> list[str]:
        return list(self._headers)

    def ref_id(self, ref: str) -> tuple[str, str]:
        return Path(ref).name, ref + ".hea"

    def read(self, ref: str) -> Record:
        record_id = Path(ref).name
        header_file = ref + ".hea"
        raw, fs, leads, comments = read_wfdb(ref, record_id)
        info = parse_comments(comments)
        codes = [c.strip() for c in info.get("dx", "").split(",") if c.strip()]
        if not codes:
            raise RecordError(record_id, header_file, "empty label set (no '# Dx:' codes)")
        bad = [c for c in codes if not c.isdigit()]
        if bad:
            raise RecordError(record_id, header_file, f"malformed SNOMED-CT code(s) {bad}")
        signal = standardize(raw, fs, leads, self.fs_out, record_id, header_file)
        dataset = dataset_of(record_id)
        age = info.get("age", "")
        sex = info.get("sex", "").lower()
        ecg_id = ptbxl_ecg_id(record_id)
        metadata = {
            "fold": stable_fold(f"{dataset}/{record_id}"),
            "patient_id": record_id,
            "age": float(age) if _is_number(age) else float("nan"),
            "sex": {"male": 0, "m": 0, "female": 1, "f": 1}.get(sex, -1),
            "ptbxl_ecg_id": ecg_id if ecg_id is not None else -1,
        }
        return Record(id=record_id, dataset=dataset, file=header_file, signal=signal, fs=self.fs_out,
                      fs_original=fs, labels=sorted(set(codes), key=int), metadata=metadata)

    def label_names(self) -> None:
        return None  # the sorted union of codes seen (numeric order)

    def describe(self) -> dict:
        return {"kind": self.kind, "path": [str(r) for r in self.roots]}


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
