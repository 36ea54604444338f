"""PhysioNet/CinC Challenge 2020 and 2021 format: a directory tree of WFDB ``.hea`` + ``.mat``.

One tree may mix all challenge sources (CPSC, CPSC-extra, INCART, PTB, PTB-XL, Georgia,
Chapman-Shaoxing, Ningbo); the dataset of each record follows from its id prefix. Labels are
the SNOMED-CT codes of the header line ``# Dx: code,code,...``; rates range 257-1000 Hz and
lengths 6 s to 30 min, all kept whole and resampled to the store's rate.

The first CinC 2020 release (the CPSC 2018 records A0001-A6877) wrote diagnoses as abbreviations
(``# Dx: RBBB``, ``Normal``, ``I-AVB``, ...): these nine are mapped to the SNOMED-CT codes the
challenge itself later gave them (:data:`CPSC2018_DX`). Any other non-numeric diagnosis text is
kept verbatim as a label name and reported (``Record.unmapped_labels``, counted in the store
manifest's ``label_warnings``), never a reason to drop the record.
"""

from __future__ import annotations

import re
from pathlib import Path

from ecg_ray.data.signal import standardize
from ecg_ray.data.sources.base import Record, Source, label_sort_key, stable_fold
from ecg_ray.data.sources.wfdb_io import header_demographics, parse_comments, read_wfdb
from ecg_ray.errors import RecordError, SourceError

# Id prefix -> dataset name, longest prefix first. PTB-XL records are "HR<ecg_id>".
_PREFIXES = (("HR", "ptbxl"), ("JS", None), ("A", "cpsc"), ("Q", "cpsc-extra"), ("I", "incart"),
             ("S", "ptb"), ("E", "georgia"))
# Chapman-Shaoxing is JS00001-JS10646 in the 2021 release; the Ningbo records follow.
_CHAPMAN_LAST = 10646

# The diagnosis abbreviations of the first CinC 2020 release (CPSC 2018) -> SNOMED-CT codes, as in the
# challenge's own mapping tables (github.com/physionetchallenges/evaluation-2020):
#   dx_mapping_scored.csv   (commit 34746ef2c98a64f3554c69059f02f65fff379882)
#   dx_mapping_unscored.csv (commit e99e63328773f2af3ca15a7e42620e2456f050ea)
# Each code is the row whose "CPSC" column counts the CPSC 2018 records of that class (scored: IAVB 722,
# AF 1221, LBBB 236, NSR 918, PAC 616, RBBB 1857; unscored: VEB 700, STD 869, STE 220). CPSC's "PVC" is
# "ventricular ectopics" 164884008 there (CPSC 700), not the scored "premature ventricular
# contractions" 427172004 (CPSC 0, CPSC-Extra only). Keys as normalized by _dx_key (upper case, no
# whitespace).
CPSC2018_DX = {
    "AF": "164889003",      # atrial fibrillation (scored, AF)
    "I-AVB": "270492004",   # 1st degree av block (scored, IAVB)
    "LBBB": "164909002",    # left bundle branch block (scored, LBBB)
    "NORMAL": "426783006",  # sinus rhythm (scored, NSR)
    "PAC": "284470004",     # premature atrial contraction (scored, PAC)
    "PVC": "164884008",     # ventricular ectopics (unscored, VEB)
    "RBBB": "59118001",     # right bundle branch block (scored, RBBB)
    "STD": "429622005",     # st depression (unscored, STD)
    "STE": "164931005",     # st elevation (unscored, STE)
}


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


def _dx_key(text: str) -> str:
    return re.sub(r"\s+", "", text).upper()


def snomed_code(text: str) -> str | None:
    """SNOMED-CT code of one diagnosis entry: a numeric code as given, a CPSC 2018 abbreviation
    (case and whitespace ignored, "i-avb", " Normal ") mapped, anything else None."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        return text
    return CPSC2018_DX.get(_dx_key(text))


def parse_dx(value: str) -> tuple[list[str], list[str]]:
    """Labels and unmapped texts of a ``# Dx:`` value (comma-separated codes and/or abbreviations).

    Labels are the SNOMED-CT codes (numeric order) followed by any text that is neither a code
    nor a known abbreviation, kept verbatim (stripped) as a label name; those texts are also
    returned, in order of first appearance, so the caller can report them.
    """
    entries = [c.strip() for c in value.split(",") if c.strip()]
    labels = [snomed_code(c) or c for c in entries]
    unmapped = list(dict.fromkeys(c for c in entries if snomed_code(c) is None))
    return sorted(set(labels), key=label_sort_key), unmapped


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
        labels, unmapped = parse_dx(info.get("dx", ""))
        if not labels:
            raise RecordError(record_id, header_file, "empty label set (no '# Dx:' codes)")
        signal = standardize(raw, fs, leads, self.fs_out, record_id, header_file)
        dataset = dataset_of(record_id)
        ecg_id = ptbxl_ecg_id(record_id)
        metadata = {
            "fold": stable_fold(f"{dataset}/{record_id}"),
            "patient_id": record_id,
            **header_demographics(info),
            "ptbxl_ecg_id": ecg_id if ecg_id is not None else -1,
        }
        return Record(id=record_id, dataset=dataset, file=header_file, signal=signal, fs=self.fs_out,
                      fs_original=fs, labels=labels, metadata=metadata, unmapped_labels=unmapped)

    def label_names(self) -> None:
        return None  # the sorted union of labels seen: codes in numeric order, then any texts

    def describe(self) -> dict:
        return {"kind": self.kind, "path": [str(r) for r in self.roots]}
