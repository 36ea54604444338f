"""Labelled synthetic 12-lead ECG: the project's demo data, needing no download.

Every record is drawn from a small physiological model rather than from noise, so that a
self-supervised encoder has real structure to learn and a linear probe has classes to separate:

* **One heart vector.** The heart is a single 3-D current dipole ``D(t)`` (a vectorcardiogram)
  in body axes x = patient's left, y = inferior (feet), z = anterior (chest). Each wave (P, the
  QRS sub-components, ST, T) is a bump in time carrying a fixed 3-D direction, so
  ``D(t) = sum_waves g_wave(t) * v_wave``. Real ECGs are close to this, which is why their 12
  leads are so redundant; a model that learns lead relations learns something true.
* **Leads are projections.** Limb leads I (0 deg) and II (+60 deg) are dot products of ``D``
  with frontal-plane lead vectors; III, aVR, aVL and aVF are then *computed* from I and II by
  Einthoven/Goldberger (III = II - I, aVR = -(I+II)/2, aVL = I - II/2, aVF = II - I/2), so those
  identities hold exactly, as they do for real recorders that derive them. V1..V6 are
  projections on horizontal-plane directions from V1 (right-anterior) to V6 (left lateral),
  with a gain > 1 because chest electrodes sit closer to the heart.
* **Noise lives on electrodes.** Baseline wander and broadband noise are added to the electrode
  potentials (RA, LA, LL, V1..V6 against Wilson's terminal), not to the leads, so the lead
  identities survive the noise, again as on a real recorder.
* **Variation.** Per record: electrical axis (a random 3-D rotation of the ventricular vectors),
  overall voltage, P/T size, PR and QT, chest electrode placement, noise and wander levels.
  Per beat: respiratory sinus arrhythmia and a slow (Mayer wave) rhythm change the RR interval,
  respiration modulates QRS voltage, and QT follows the preceding RR (Bazett-like sqrt law).

Classes (one label per record; ``classes`` picks a subset, in the caller's order):

============  ==============================================================================
``NORM``      sinus rhythm 60-90 bpm, normal axis and intervals (QRS ~90 ms)
``SBRAD``     sinus bradycardia 40-58 bpm
``STACH``     sinus tachycardia 102-150 bpm
``AFIB``      atrial fibrillation: no P waves, 4-8 Hz fibrillatory baseline, irregular RR
``LBBB``      left bundle branch block-like: QRS ~140 ms, notched R in I/V5-V6, QS in V1-V2,
              discordant ST-T
``STE``       ST elevation 0.15-0.4 mV, anterior (V1-V4) or inferior (II, III, aVF) with
              reciprocal depression, and hyperacute T waves
``LVH``       left ventricular hypertrophy: ~2-2.5x QRS voltage (Sokolow-Lyon > 3.5 mV in ~3/4),
              slightly wider QRS, often a strain pattern (lateral ST depression, T inversion)
============  ==============================================================================

``DEFAULT_CLASSES`` is the first six. Records are single-label so that the primary classes are
balanced exactly: record ``i`` gets ``classes[order[i] % len(classes)]`` where ``order`` is a
permutation of ``range(n_records)`` seeded by ``seed``, so class counts differ by at most one
and are not in a repeating pattern along the record index. A record's signal depends only on
``(seed, i)`` and its class, so :meth:`SyntheticSource.read` can run in any process, in any
order.

Metadata follows the real sources: ``fold`` from :func:`stable_fold` of the id, ``patient_id``
(= id; every record is its own patient), ``age`` (years, int), ``sex`` (0 = male, 1 = female,
PTB-XL's coding) and ``heart_rate`` (bpm, mean over the beats inside the record).
"""

from __future__ import annotations

from collections.abc import Hashable
from functools import lru_cache
from typing import Any

import numpy as np

from ecg_ray.data.signal import CANONICAL_LEADS, MAX_FS, MIN_FS, standardize
from ecg_ray.data.sources.base import Record, Source, stable_fold
from ecg_ray.errors import ConfigError, RecordError

SUPPORTED_CLASSES: tuple[str, ...] = ("NORM", "SBRAD", "STACH", "AFIB", "LBBB", "STE", "LVH")
DEFAULT_CLASSES: tuple[str, ...] = SUPPORTED_CLASSES[:6]
RHYTHM_CLASSES = frozenset({"NORM", "SBRAD", "STACH", "AFIB"})

# Frontal-plane lead vectors (Einthoven triangle): I at 0 deg, II at +60 deg (x left, y down).
_LEAD_I = np.array([1.0, 0.0, 0.0])
_LEAD_II = np.array([0.5, np.sqrt(3.0) / 2.0, 0.0])
# Chest leads: angle in the horizontal plane from the left (x) toward the front (z), a small
# inferior tilt for V4-V6 (5th intercostal space sits lower than V1-V2), and a gain for
# proximity to the heart. Together these give the usual rS in V1 -> qR in V6 R-wave progression.
_CHEST_ANGLE_DEG = np.array([120.0, 92.0, 75.0, 58.0, 30.0, 0.0])
_CHEST_TILT = np.array([0.0, 0.0, 0.05, 0.10, 0.12, 0.12])
_CHEST_GAIN = np.array([1.2, 1.8, 1.9, 1.8, 1.5, 1.2])

# Electrode noise channels RA, LA, LL, V1..V6 and how each enters I, II, V1..V6.
_N_ELECTRODES = 9
_ELECTRODE_TO_LEADS = np.zeros((_N_ELECTRODES, 8))
_ELECTRODE_TO_LEADS[0, :2] = -1.0  # RA: I = LA - RA, II = LL - RA
_ELECTRODE_TO_LEADS[1, 0] = 1.0
_ELECTRODE_TO_LEADS[2, 1] = 1.0
_ELECTRODE_TO_LEADS[:3, 2:] = -1.0 / 3.0  # Wilson's central terminal is the limb electrodes' mean
_ELECTRODE_TO_LEADS[3:, 2:] = np.eye(6)


@lru_cache(maxsize=8)
def _class_order(seed: int, n_records: int) -> np.ndarray:
    """Seeded permutation of the records; class of record i is classes[order[i] % n_classes].

    Cached per process rather than stored on the source: prepare pickles the source with every
    job, so it must stay small whatever n_records is. The 3-word seed cannot collide with a
    record's 2-word [seed, i] stream.
    """
    order = np.random.default_rng([seed, n_records, 0x5EED]).permutation(n_records)
    order.setflags(write=False)
    return order


def _rotation(rng: np.random.Generator, frontal_sd_deg: float) -> np.ndarray:
    """Random rotation of the heart vector: mostly in the frontal plane (electrical axis)."""
    az, ay, ax = np.deg2rad(rng.normal(0.0, [frontal_sd_deg, 10.0, 8.0]))
    cz, sz, cy, sy, cx, sx = np.cos(az), np.sin(az), np.cos(ay), np.sin(ay), np.cos(ax), np.sin(ax)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])  # x -> y: axis turns rightward
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])  # horizontal-plane rotation
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    return rz @ ry @ rx


def _render_bumps(n: int, fs: float, beat_t: np.ndarray, bumps: list[tuple]) -> np.ndarray:
    """Time courses (len(bumps), n) of waves that recur at every beat, one row per wave.

    A bump is ``(mu, sig_l, sig_r, amp, power)``: per beat, ``amp * exp(-0.5 |dt/sigma|^power)``
    centred ``mu`` seconds after the R peak, with ``sig_l`` before the centre and ``sig_r`` after
    (T waves rise slowly and fall fast); power 4 instead of 2 gives the flat top of an ST
    plateau. ``mu``, the sigmas and ``amp`` are scalars or per-beat arrays. Each bump is
    evaluated only within +-4 sigma of its centre, and all bumps of all beats are flattened into
    one ragged vector and summed into place with a single bincount: the cost is a few numpy calls
    per record, not per sample, beat or wave.
    """
    nb, k = len(beat_t), len(bumps)
    params = np.empty((4, k, nb))  # mu, sig_l, sig_r, amp
    for j, bump in enumerate(bumps):
        for p in range(4):
            params[p, j] = bump[p]  # scalars broadcast over the beats
    mu, sig_l, sig_r, amp = params
    quartic = np.array([bump[4] == 4 for bump in bumps])
    half = np.ceil(4.0 * np.maximum(sig_l, sig_r).max(axis=1) * fs).astype(np.int64)  # per wave
    width = 2 * half + 1
    offsets = np.concatenate([np.tile(np.arange(-h, h + 1), nb) for h in half])
    pair = np.repeat(np.arange(k * nb), np.repeat(width, nb))  # (wave, beat) of every element
    centre = ((beat_t + mu) * fs).ravel()
    idx = np.rint(centre).astype(np.int64)[pair] + offsets
    dt = (idx - centre[pair]) / fs
    z = dt / np.where(dt < 0.0, sig_l.ravel()[pair], sig_r.ravel()[pair])
    z *= z
    z = np.where(quartic[pair // nb], z * z, z)
    g = amp.ravel()[pair] * np.exp(-0.5 * z)
    inside = (idx >= 0) & (idx < n)
    flat = idx + (pair // nb) * n
    return np.bincount(flat[inside], weights=g[inside], minlength=k * n).reshape(k, n)


class SyntheticSource(Source):
    """Deterministic, labelled 12-lead ECG from a dipole model (see the module docstring).

    ``refs()`` are the integers ``0..n_records-1``; record ``i`` has id ``syn{i:06d}`` and file
    ``synthetic://seed{seed}/{i}``. Signals are generated at ``fs_generate`` and standardized to
    ``fs_out`` like every other source.
    """

    kind = "synthetic"

    def __init__(
        self,
        n_records: int = 1000,
        fs_out: float = 100.0,
        seed: int = 0,
        duration_s: float = 10.0,
        classes: list[str] | tuple[str, ...] | None = None,
        fs_generate: float = 500.0,
    ):
        super().__init__(fs_out)
        if int(n_records) != n_records or n_records < 1:
            raise ConfigError(f"n_records must be a positive integer, got {n_records!r}")
        if int(seed) != seed or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        if not duration_s > 0:
            raise ConfigError(f"duration_s must be positive, got {duration_s!r}")
        if not (MIN_FS <= float(fs_generate) <= MAX_FS):
            raise ConfigError(f"fs_generate must be in [{MIN_FS}, {MAX_FS}] Hz, got {fs_generate!r}")
        classes = list(DEFAULT_CLASSES if classes is None else classes)
        unknown = [c for c in classes if c not in SUPPORTED_CLASSES]
        if unknown or not classes or len(set(classes)) != len(classes):
            raise ConfigError(f"classes must be distinct names from {list(SUPPORTED_CLASSES)}, got {classes!r}")
        self.n_records = int(n_records)
        self.seed = int(seed)
        self.duration_s = float(duration_s)
        self.fs_generate = float(fs_generate)
        self.classes = classes

    # -- Source interface ---------------------------------------------------------------------

    def refs(self) -> list[Hashable]:
        return list(range(self.n_records))

    def ref_id(self, ref: Hashable) -> tuple[str, str]:
        return f"syn{int(ref):06d}", f"synthetic://seed{self.seed}/{int(ref)}"

    def label_names(self) -> list[str]:
        return list(self.classes)

    def label_sets(self) -> dict[str, list[str]]:
        rhythm = [c for c in self.classes if c in RHYTHM_CLASSES]
        morphology = [c for c in self.classes if c not in RHYTHM_CLASSES]
        return {name: members for name, members in (("rhythm", rhythm), ("morphology", morphology)) if members}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_records": self.n_records, "seed": self.seed, "duration_s": self.duration_s,
                "fs_generate": self.fs_generate, "classes": list(self.classes)}

    def class_of(self, i: int) -> str:
        """The (single) label of record ``i``."""
        return self.classes[int(_class_order(self.seed, self.n_records)[i]) % len(self.classes)]

    def read(self, ref: Hashable) -> Record:
        record_id, file = self.ref_id(ref) if isinstance(ref, (int, np.integer)) else (str(ref), str(ref))
        if not isinstance(ref, (int, np.integer)) or not 0 <= int(ref) < self.n_records:
            raise RecordError(record_id, file, f"no synthetic record {ref!r} (have 0..{self.n_records - 1})")
        i = int(ref)
        label = self.class_of(i)
        rng = np.random.default_rng([self.seed, i])
        raw, meta = _generate(rng, label, self.duration_s, self.fs_generate)
        signal = standardize(raw, self.fs_generate, list(CANONICAL_LEADS), self.fs_out, record_id, file)
        metadata = {"fold": stable_fold(record_id), "patient_id": record_id, **meta}
        return Record(id=record_id, dataset="synthetic", file=file, signal=signal, fs=self.fs_out,
                      fs_original=self.fs_generate, labels=[label], metadata=metadata)


# -- the generator --------------------------------------------------------------------------------

# Heart-rate ranges (bpm) per class; the morphology classes are in sinus rhythm at ordinary rates.
_HR_RANGE = {"NORM": (60.0, 90.0), "SBRAD": (40.0, 58.0), "STACH": (102.0, 150.0), "AFIB": (75.0, 130.0),
             "LBBB": (55.0, 95.0), "STE": (55.0, 100.0), "LVH": (55.0, 90.0)}
# (mean, sd) of age; conduction disease, AF, infarction and LVH belong to older patients.
_AGE = {"NORM": (45, 15), "SBRAD": (45, 18), "STACH": (45, 18), "AFIB": (72, 9), "LBBB": (70, 10),
        "STE": (62, 12), "LVH": (63, 12)}
_P_FEMALE = {"AFIB": 0.4, "STE": 0.3, "LVH": 0.4}


def _beat_times(rng: np.random.Generator, label: str, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """R-peak times (s) covering [-1.5 s, duration + 1 s] and the RR preceding each beat.

    Sinus: RR is modulated by respiration (RSA, 0.15-0.4 Hz), a ~0.1 Hz Mayer wave and a little
    beat-to-beat jitter, so successive RR differ by a few percent. AF: RR are drawn independently
    from a wide log-normal (coefficient of variation 15-30%), the "irregularly irregular" rhythm
    that makes AF recognisable without any P-wave detection.
    """
    rr0 = 60.0 / rng.uniform(*_HR_RANGE[label])
    # Enough beats to cover the window even when every RR runs long; extras are trimmed below.
    n_beats = int(np.ceil((duration + 3.0) / (0.27 if label == "AFIB" else 0.85 * rr0))) + 1
    if label == "AFIB":
        cv = rng.uniform(0.15, 0.30)
        rr = rr0 * rng.lognormal(-0.5 * cv**2, cv, n_beats)
        rr = np.maximum(rr, 0.27)  # refractory period of the AV node
    else:
        t_approx = np.arange(n_beats) * rr0
        rsa = rng.uniform(0.01, 0.05) * (0.4 if label == "STACH" else 1.0)  # RSA fades at high rates
        f_resp = rng.uniform(0.15, 0.4)
        mod = (rsa * np.sin(2 * np.pi * f_resp * t_approx + rng.uniform(0, 2 * np.pi))
               + rng.uniform(0.0, 0.02) * np.sin(2 * np.pi * 0.1 * t_approx + rng.uniform(0, 2 * np.pi))
               + rng.normal(0.0, 0.008, n_beats))
        rr = rr0 * (1.0 + mod)
    beat_t = -1.5 + rng.uniform(0.0, rr[0]) + np.concatenate([[0.0], np.cumsum(rr[1:])])
    keep = beat_t <= duration + 1.0
    return beat_t[keep], rr[keep]


def _ventricular_waves(rng: np.random.Generator, label: str, rr: np.ndarray) -> list[tuple]:
    """(mu, sig_l, sig_r, vector, power) of every ventricular wave, relative to the R peak.

    Directions are for a normal heart (axis ~ +60 deg, QRS loop turning counter-clockwise in the
    horizontal plane): septal forces right-anterior, early apical forces left-anterior-inferior,
    the main LV free wall left-inferior-posterior, late basal forces superior-posterior.
    """
    w = rng.uniform(0.9, 1.1)  # per-record QRS width factor
    sq = np.sqrt(rr)
    t_peak = rng.uniform(0.27, 0.31) * sq  # T peak after R, lengthening with RR (QT ~ sqrt(RR))
    t_vec = np.array([0.22, 0.28, 0.22]) * rng.uniform(0.7, 1.3)
    t_wave = (t_peak, 0.062 * sq, 0.042 * sq, t_vec, 2.0)
    if label == "LBBB":
        # Septum activated left-to-right (no septal q in I/V6), then a slow, broad, left-posterior
        # activation in two humps (notched R), ~140 ms in all; ST-T point opposite the QRS.
        s = rng.uniform(0.95, 1.1)
        waves = [
            (-0.045 * s, 0.010, 0.010, np.array([0.25, 0.05, -0.10]), 2.0),
            (-0.018 * s, 0.016 * s, 0.016 * s, np.array([0.70, 0.60, -0.85]), 2.0),
            (0.028 * s, 0.016 * s, 0.016 * s, np.array([0.80, 0.50, -0.95]), 2.0),
            (0.13 * sq, 0.06, 0.06, np.array([-0.10, -0.03, 0.12]), 4.0),  # discordant ST
            (t_peak + 0.02, 0.07 * sq, 0.05 * sq, np.array([-0.30, -0.10, 0.30]), 2.0),
        ]
        return waves
    qrs = [
        (-0.030 * w, 0.007 * w, 0.007 * w, np.array([-0.10, -0.02, 0.18]), 2.0),  # septal q
        (-0.013 * w, 0.009 * w, 0.009 * w, np.array([0.22, 0.25, 0.40]), 2.0),  # apical, anterior
        (0.003 * w, 0.010 * w, 0.010 * w, np.array([0.75, 0.75, -0.35]), 2.0),  # LV free wall (R)
        (0.027 * w, 0.009 * w, 0.009 * w, np.array([-0.10, -0.25, -0.30]), 2.0),  # basal (S)
    ]
    if label == "LVH":
        # More muscle -> larger LV forces (taller R in I/V5-V6, deeper S in V1-V2), slightly wider.
        k = rng.uniform(1.9, 2.5)
        qrs[2] = (qrs[2][0] * 1.1, qrs[2][1] * 1.15, qrs[2][2] * 1.15, qrs[2][3] * np.array([k, k, 1.3 * k]), 2.0)
        qrs[3] = (qrs[3][0] * 1.1, qrs[3][1], qrs[3][2], qrs[3][3] * 1.5, 2.0)
        if rng.random() < 0.6:  # strain: repolarisation forces turned away from the thick wall
            qrs.append((0.12 * sq, 0.05, 0.06, np.array([-0.08, -0.06, 0.04]), 4.0))
            t_wave = (t_peak, 0.062 * sq, 0.042 * sq, np.array([-0.22, -0.05, 0.18]), 2.0)
    if label == "STE":
        # Injury current: a flat-topped ST plateau from the J point into the T wave, toward the
        # injured wall (anterior: V1-V4, I, aVL; inferior: II, III, aVF with aVL/I reciprocal).
        if rng.random() < 0.5:
            injury = np.array([0.10, -0.05, 0.25])
        else:
            injury = np.array([-0.12, 0.30, 0.02])
        injury = injury / np.linalg.norm(injury) * rng.uniform(0.15, 0.35)
        qrs.append((0.14 * sq, 0.085 * sq, 0.085 * sq, injury, 4.0))
        t_wave = (t_peak, 0.062 * sq, 0.042 * sq, t_vec + 1.2 * injury, 2.0)  # hyperacute T
    return [*qrs, t_wave]


def _generate(rng: np.random.Generator, label: str, duration: float, fs: float) -> tuple[np.ndarray, dict]:
    """Raw 12-lead signal (time, 12) float64 mV in canonical order at ``fs``, and metadata.

    Every component (a wave's time course, an electrode's noise) is one row of ``shapes``;
    the same row of ``gains`` says how it reaches the 8 independent leads (I, II, V1..V6). The leads
    are then a single matrix product; with the batched bumps this keeps a record to ~1 ms.
    """
    n = int(round(duration * fs))
    t = np.arange(n) / fs
    beat_t, rr = _beat_times(rng, label, duration)
    nb = len(beat_t)

    # Lead vectors (3, 8): I, II, then the chest leads with per-record electrode placement.
    angles = np.deg2rad(_CHEST_ANGLE_DEG + rng.normal(0.0, 5.0, 6))
    chest_gain = _CHEST_GAIN * rng.uniform(0.85, 1.15, 6)
    chest = np.stack([np.cos(angles), _CHEST_TILT, np.sin(angles)]) * chest_gain  # (3, 6)
    leads = np.column_stack([_LEAD_I, _LEAD_II, chest])

    # Rows of `shapes`: electrodes, then the beat-locked waves, then AF's fibrillatory waves.
    waves = _ventricular_waves(rng, label, rr)
    n_bumps = len(waves) + (0 if label == "AFIB" else 2)
    shapes = np.empty((_N_ELECTRODES + n_bumps + (2 if label == "AFIB" else 0), n))
    gains = np.empty((len(shapes), 8))

    # Electrodes RA, LA, LL, V1..V6: broadband noise plus baseline wander (respiration, drift).
    # Wander is computed on a coarse 25 Hz grid and interpolated: it has nothing above 1 Hz.
    # I = LA - RA, II = LL - RA, Vk = Vk - (RA + LA + LL) / 3 (Wilson's central terminal).
    # The noise is uniform rather than Gaussian because uniform draws are 4x cheaper; after the
    # anti-aliasing filter of any resampling it is Gaussian anyway (sum of many samples).
    noise = shapes[:_N_ELECTRODES]
    rng.random(out=noise)
    noise -= 0.5
    noise *= np.sqrt(12.0) * rng.uniform(0.004, 0.02)  # sd 4-20 uV per electrode
    coarse = np.arange(0.0, duration + 0.04, 0.04)
    freq = rng.uniform(0.05, 0.5, (_N_ELECTRODES, 2, 1))
    phase = rng.uniform(0, 2 * np.pi, (_N_ELECTRODES, 2, 1))
    amp = rng.uniform(0.01, 0.08, (_N_ELECTRODES, 2, 1)) * rng.uniform(0.3, 1.5)
    slow = (amp * np.sin(2 * np.pi * freq * coarse + phase)).sum(1)
    for e in range(_N_ELECTRODES):
        noise[e] += np.interp(t, coarse, slow[e])
    gains[:_N_ELECTRODES] = _ELECTRODE_TO_LEADS

    # Ventricles. Respiration modulates QRS voltage (heart position, lung impedance).
    resp_f = rng.uniform(0.15, 0.4)
    resp = 1.0 + rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * resp_f * beat_t + rng.uniform(0, 6.3))
    beat_amp = resp * (1.0 + rng.normal(0.0, 0.01, nb))
    rot = _rotation(rng, frontal_sd_deg=12.0)
    volt = np.clip(rng.lognormal(0.0, 0.15), 0.7, 1.5)  # habitus, sex, electrode contact
    bumps = [(mu, sl, sr, beat_amp, power) for mu, sl, sr, _, power in waves]
    gains[_N_ELECTRODES:_N_ELECTRODES + len(waves)] = (volt * np.stack([v for *_, v, _ in waves]) @ rot.T) @ leads

    if label != "AFIB":
        # P wave: right atrium first (anterior-inferior), left atrium 40 ms later (left-posterior),
        # giving a smooth ~100 ms P in II and a biphasic P in V1. PR shortens a little at high rates.
        pr = rng.uniform(0.14, 0.19) * np.clip(rr, 0.4, 1.5) ** 0.2
        p_amp = rng.uniform(0.7, 1.3)
        p_rot = _rotation(rng, frontal_sd_deg=10.0)
        bumps += [(-pr - 0.02, 0.02, 0.02, p_amp, 2), (-pr + 0.02, 0.02, 0.02, p_amp, 2)]
        gains[_N_ELECTRODES + len(waves):_N_ELECTRODES + n_bumps] = (
            np.array([[0.02, 0.10, 0.08], [0.10, 0.06, -0.06]]) @ p_rot.T @ leads)
    shapes[_N_ELECTRODES:_N_ELECTRODES + n_bumps] = _render_bumps(n, fs, beat_t, bumps)

    if label == "AFIB":
        # Fibrillatory waves: two disorganised 4-8 Hz atrial sources with drifting frequency and
        # amplitude, strongest toward V1 and the inferior leads; no P waves.
        row = _N_ELECTRODES + n_bumps
        for vec in (np.array([-0.3, 0.5, 0.8]), np.array([0.5, 0.6, 0.2])):
            f = rng.uniform(4.0, 8.0) + 0.6 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6.3))
            env = rng.uniform(0.03, 0.08) * (1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t
                                                                + rng.uniform(0, 6.3)))
            shapes[row] = env * np.sin(2 * np.pi * np.cumsum(f) / fs + rng.uniform(0, 6.3))
            gains[row] = (vec / np.linalg.norm(vec)) @ leads
            row += 1

    independent = shapes.T @ gains  # (n, 8): I, II, V1..V6
    lead_i, lead_ii = independent[:, 0], independent[:, 1]
    out = np.empty((n, 12))
    out[:, 0] = lead_i
    out[:, 1] = lead_ii
    # Derived limb leads, exactly as a recorder computes them from I and II.
    out[:, 2] = lead_ii - lead_i
    out[:, 3] = -(lead_i + lead_ii) / 2.0
    out[:, 4] = lead_i - lead_ii / 2.0
    out[:, 5] = lead_ii - lead_i / 2.0
    out[:, 6:] = independent[:, 2:]

    # rr[k] is the interval ending at beat k, so the beats inside the record give its mean rate.
    inside = (beat_t >= 0.0) & (beat_t < duration)
    rr_inside = rr[inside] if inside.any() else rr
    mean_age, sd_age = _AGE[label]
    meta = {
        "age": int(np.clip(round(rng.normal(mean_age, sd_age)), 18, 95)),
        "sex": int(rng.random() < _P_FEMALE.get(label, 0.5)),
        "heart_rate": round(float(60.0 / np.mean(rr_inside)), 1),
    }
    return out, meta
