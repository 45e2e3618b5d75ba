"""Frame-level acoustic features of an utterance window (librosa's measures + a cheap pitch).

Per frame (hop 20 ms by default): 13 MFCCs and their deltas, log energy and its delta, log pitch,
voicing probability, spectral centroid, flatness and roll-off, and zero-crossing rate; see
:data:`AUDIO_FEATURE_NAMES`. Each column is then standardised over the utterance (cepstral mean
and variance normalisation, extended to the other measures), which removes microphone gain and
speaker pitch range; the voicing probability keeps its [0, 1] scale.

The spectra, mel bands and MFCCs are librosa's (``stft`` with a periodic Hann window and zero
padding, Slaney mel filters, ``power_to_db`` with an 80 dB floor, orthonormal DCT-II) written out
in numpy here: importing librosa loads numba and its cached kernels, seconds of a cold start,
while these few lines cost nothing. tests/test_acoustic.py checks them against librosa.

Pitch comes from a normalised autocorrelation (Boersma 1993, "Accurate short-term analysis of the
fundamental frequency ..."): one batched FFT over all frames, far cheaper than ``librosa.pyin``
and without numba compilation. The peak height doubles as the voicing probability.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

N_MFCC = 13
FMIN_HZ = 70.0  # lowest speaking pitch searched (deep male voices reach ~75 Hz)
FMAX_HZ = 400.0  # highest (children / excited speech go higher, rarely in talks)
VOICING_THRESHOLD = 0.45  # autocorrelation peak above which a frame counts as voiced
OCTAVE_COST = 0.01  # per octave of lag, favouring higher pitch candidates (Praat's default)
SILENCE_DB = -60.0  # frames quieter than this (dBFS) are never voiced
_EPS = 1e-10

AUDIO_FEATURE_NAMES: tuple[str, ...] = (
    *(f"mfcc_{i}" for i in range(N_MFCC)),
    *(f"delta_mfcc_{i}" for i in range(N_MFCC)),
    "energy_db",  # RMS level, dB re full scale
    "delta_energy_db",
    "log_pitch",  # log2(f0 / 100 Hz); unvoiced frames hold the utterance's voiced mean
    "delta_log_pitch",
    "voicing",  # autocorrelation peak in [0, 1]; not standardised
    "spectral_centroid",  # kHz
    "log_spectral_flatness",  # log10 of geometric / arithmetic mean of the power spectrum
    "spectral_rolloff",  # kHz below which 85 % of the energy lies
    "zero_crossing_rate",  # crossings per sample
)
D_AUDIO = len(AUDIO_FEATURE_NAMES)  # 35
_VOICING_COLUMN = AUDIO_FEATURE_NAMES.index("voicing")


@dataclass(frozen=True)
class FrameMeasures:
    """Raw per-frame measurements of one window, before normalisation; arrays are ``(n_frames,)``
    except ``mfcc`` ``(n_frames, 13)``."""

    times_s: np.ndarray  # frame centres, seconds from the start of the media
    mfcc: np.ndarray
    energy_db: np.ndarray  # RMS level, dBFS (>= -100)
    f0_hz: np.ndarray  # pitch; NaN where unvoiced
    voicing: np.ndarray  # [0, 1]
    centroid_hz: np.ndarray
    flatness: np.ndarray  # [0, 1]
    rolloff_hz: np.ndarray
    zero_crossing_rate: np.ndarray  # crossings per sample

    @property
    def n_frames(self) -> int:
        return len(self.times_s)


@dataclass(frozen=True)
class AcousticSummary:
    """Descriptors of one window for reports."""

    mean_pitch_hz: float | None  # over voiced frames; None when nothing is voiced
    mean_energy_db: float  # RMS level of the whole window, dBFS (-100 for silence)
    voiced_fraction: float  # share of frames that are voiced, in [0, 1]


def _window(
    audio: np.ndarray, sample_rate_hz: int, start_s: float, end_s: float | None
) -> np.ndarray:
    """The float64 samples of ``[start_s, end_s)`` (clipped to the signal)."""
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (n_samples,), got shape {audio.shape}")
    start = max(0, round(start_s * sample_rate_hz))
    end = len(audio) if end_s is None else min(len(audio), round(end_s * sample_rate_hz))
    return np.nan_to_num(audio[start : max(start, end)].astype(np.float64))


def _frame_sizes(sample_rate_hz: int, hop_s: float) -> tuple[int, int, int]:
    """(hop, n_fft, pitch frame) in samples: ~32 ms spectra; pitch frames hold 3 periods of the
    lowest pitch (Boersma's rule; 1024 samples = 64 ms at 16 kHz)."""
    hop = max(1, round(hop_s * sample_rate_hz))
    n_fft = 1 << max(4, round(np.log2(0.032 * sample_rate_hz)))
    pitch_frame = 1 << max(5, int(np.ceil(np.log2(3 * sample_rate_hz / FMIN_HZ))))
    return hop, n_fft, pitch_frame


def _centred_frames(y: np.ndarray, frame_length: int, hop: int, n_frames: int) -> np.ndarray:
    """``(n_frames, frame_length)`` frames centred on ``t * hop``, zero-padded at the edges."""
    padded = np.pad(y, (frame_length // 2, frame_length // 2 + n_frames * hop))
    starts = np.arange(n_frames) * hop
    return np.lib.stride_tricks.sliding_window_view(padded, frame_length)[starts]


def estimate_pitch(
    frames: np.ndarray, sample_rate_hz: int, fmin_hz: float = FMIN_HZ, fmax_hz: float = FMAX_HZ
) -> tuple[np.ndarray, np.ndarray]:
    """Pitch and voicing from the window-corrected normalised autocorrelation.

    Args:
        frames: float ``(n_frames, frame_length)`` raw samples.
        sample_rate_hz: their sampling rate.

    Returns:
        ``f0_hz`` ``(n_frames,)`` (parabolic-interpolated peak lag) and ``voicing`` in [0, 1],
        the height of that peak.
    """
    n = frames.shape[1]
    window = np.hanning(n)
    x = (frames - frames.mean(axis=1, keepdims=True)) * window
    n_fft = 1 << int(np.ceil(np.log2(2 * n)))
    r = np.fft.irfft(np.abs(np.fft.rfft(x, n_fft)) ** 2, n_fft)[:, :n]
    r_window = np.fft.irfft(np.abs(np.fft.rfft(window, n_fft)) ** 2, n_fft)[:n]
    # Dividing by the window's own autocorrelation undoes its taper (Boersma eq. 9).
    r = r / np.maximum(r[:, :1], _EPS) / np.maximum(r_window / r_window[0], _EPS)
    lo = max(2, int(sample_rate_hz / fmax_hz))
    hi = min(n // 2, int(np.ceil(sample_rate_hz / fmin_hz)))  # the correction is noisy past n/2
    # Praat's octave cost: at equal height, prefer the shorter lag, else a clean periodic voice
    # reads an octave low (r is ~1 at every multiple of the period).
    lags = np.arange(lo, hi)
    octave_penalty = OCTAVE_COST * np.log2(lags * fmin_hz / sample_rate_hz)
    lag = lo + np.argmax(r[:, lo:hi] - octave_penalty, axis=1)
    rows = np.arange(len(r))
    left, peak, right = r[rows, lag - 1], r[rows, lag], r[rows, np.minimum(lag + 1, n - 1)]
    curvature = left - 2 * peak + right
    offset = np.where(curvature < 0, 0.5 * (left - right) / np.minimum(curvature, -_EPS), 0.0)
    f0 = sample_rate_hz / (lag + np.clip(offset, -0.5, 0.5))
    return f0, np.clip(peak, 0.0, 1.0)


def _hann(n: int) -> np.ndarray:
    """scipy's periodic Hann window (``get_window("hann", n)``), computed as scipy does."""
    fac = np.linspace(-np.pi, np.pi, n + 1)
    w = np.zeros(n + 1)
    w += 0.5
    w += 0.5 * np.cos(fac)
    return w[:n]


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's ``htk=False``)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    hz = np.asarray(hz, np.float64)
    mels = hz / f_sp
    return np.where(
        hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mels
    )


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(
        mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels
    )


@functools.lru_cache(maxsize=8)
def mel_filters(sample_rate_hz: int, n_fft: int, n_mels: int, fmax_hz: float) -> np.ndarray:
    """float32 ``(n_mels, 1 + n_fft // 2)`` Slaney-normalised triangular mel filters from 0 Hz,
    as ``librosa.filters.mel(sr=..., n_fft=..., n_mels=..., fmax=...)``."""
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate_hz)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(0.0)), _hz_to_mel(fmax_hz), n_mels + 2))
    fdiff = np.diff(mel_hz)
    ramps = np.subtract.outer(mel_hz, fft_hz)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2 : n_mels + 2] - mel_hz[:n_mels]))[:, None]
    weights.flags.writeable = False
    return weights


def _power_spectrum(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``|librosa.stft(y, n_fft, hop, center=True)|**2``: ``(1 + n_fft // 2, n_frames)``."""
    padded = np.pad(y, n_fft // 2)
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    spectrum = np.fft.rfft(_hann(n_fft) * frames, axis=-1)
    return (np.abs(spectrum) ** 2).T


@functools.lru_cache(maxsize=4)
def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """float64 ``(n_out, n_in)``: the first ``n_out`` rows of the orthonormal DCT-II, so that
    ``dct_matrix(k, n) @ x == scipy.fft.dct(x, type=2, norm="ortho", axis=0)[:k]`` (to float
    rounding) without importing scipy.fft (0.2-0.5 s of a cold start)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    matrix = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    matrix[0] /= np.sqrt(2.0)
    matrix.flags.writeable = False
    return matrix


def _mfcc(power: np.ndarray, sample_rate_hz: int, n_fft: int) -> np.ndarray:
    """13 MFCCs ``(n_frames, 13)`` from 40 mel bands to 8 kHz, in dB with an 80 dB floor."""
    mel = np.einsum("ft,mf->mt", power, mel_filters(sample_rate_hz, n_fft, 40, 8000.0))
    db = 10.0 * np.log10(np.maximum(_EPS, mel))
    db = np.maximum(db, db.max() - 80.0)
    return (dct_matrix(N_MFCC, len(db)) @ db).T


def measure_frames(
    audio: np.ndarray,
    sample_rate_hz: int,
    start_s: float = 0.0,
    end_s: float | None = None,
    hop_s: float = 0.02,
) -> FrameMeasures:
    """Raw acoustic measurements every ``hop_s`` seconds over ``[start_s, end_s)``.

    A window shorter than one analysis frame still gives one frame (zero-padded); an empty window
    gives zero frames. Silent input gives finite values (energy -100 dB, no pitch).
    """
    y = _window(audio, sample_rate_hz, start_s, end_s)
    hop, n_fft, pitch_frame = _frame_sizes(sample_rate_hz, hop_s)
    if len(y) == 0:
        empty = np.zeros(0)
        return FrameMeasures(empty, np.zeros((0, N_MFCC)), *([empty] * 7))
    n_frames = 1 + len(y) // hop  # librosa's count with center=True
    padded = np.pad(y, (0, max(0, n_fft - len(y))))  # stft needs one full frame
    power = _power_spectrum(padded, n_fft, hop)[:, :n_frames]
    frames = _centred_frames(y, n_fft, hop, n_frames)
    energy_db = 10 * np.log10(np.maximum(np.mean(frames**2, axis=1), _EPS))
    f0, voicing = estimate_pitch(_centred_frames(y, pitch_frame, hop, n_frames), sample_rate_hz)
    voiced = (voicing >= VOICING_THRESHOLD) & (energy_db > SILENCE_DB)
    freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate_hz)
    total = np.maximum(power.sum(axis=0), _EPS)
    cumulative = np.cumsum(power, axis=0) / total
    signs = np.signbit(frames)
    return FrameMeasures(
        times_s=start_s + np.arange(n_frames) * hop / sample_rate_hz,
        mfcc=_mfcc(power, sample_rate_hz, n_fft),
        energy_db=energy_db,
        f0_hz=np.where(voiced, f0, np.nan),
        voicing=np.where(energy_db > SILENCE_DB, voicing, 0.0),
        centroid_hz=(freqs @ power) / total,
        flatness=np.exp(np.mean(np.log(power + _EPS), axis=0)) / (power.mean(axis=0) + _EPS),
        rolloff_hz=freqs[np.argmax(cumulative >= 0.85, axis=0)],
        zero_crossing_rate=np.mean(signs[:, 1:] != signs[:, :-1], axis=1),
    )


def delta(x: np.ndarray) -> np.ndarray:
    """Centred first difference along axis 0, edges repeated: works for any ``n_frames >= 1``.

    (``librosa.feature.delta`` needs at least ``width`` frames.)
    """
    if len(x) < 2:
        return np.zeros_like(x)
    padded = np.concatenate([x[:1], x, x[-1:]])
    return (padded[2:] - padded[:-2]) / 2


def standardise(features: np.ndarray, keep: tuple[int, ...] = ()) -> np.ndarray:
    """Zero mean, unit variance per column over the window; constant columns become 0.

    Args:
        features: ``(n_frames, d)``.
        keep: columns left unchanged.
    """
    mean = features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True)
    out = np.where(std > 1e-6, (features - mean) / np.maximum(std, 1e-6), 0.0)
    out[:, list(keep)] = features[:, list(keep)]
    return out


def features_from_measures(measures: FrameMeasures, use_normalization: bool = True) -> np.ndarray:
    """float32 ``(n_frames, D_AUDIO)`` in the order of :data:`AUDIO_FEATURE_NAMES`."""
    if measures.n_frames == 0:
        return np.zeros((0, D_AUDIO), np.float32)
    log_f0 = np.log2(measures.f0_hz / 100.0)
    voiced = ~np.isnan(log_f0)
    # Unvoiced frames take the mean voiced pitch, so after standardisation they sit at 0 instead
    # of posing as a very low voice.
    fill = float(log_f0[voiced].mean()) if voiced.any() else 0.0
    log_f0 = np.where(voiced, log_f0, fill)
    columns = [
        measures.mfcc,
        delta(measures.mfcc),
        measures.energy_db[:, None],
        delta(measures.energy_db)[:, None],
        log_f0[:, None],
        delta(log_f0)[:, None],
        measures.voicing[:, None],
        measures.centroid_hz[:, None] / 1000,
        np.log10(np.maximum(measures.flatness, _EPS))[:, None],
        measures.rolloff_hz[:, None] / 1000,
        measures.zero_crossing_rate[:, None],
    ]
    features = np.concatenate(columns, axis=1)
    if use_normalization:
        features = standardise(features, keep=(_VOICING_COLUMN,))
    return np.nan_to_num(features).astype(np.float32)


def acoustic_features(
    audio: np.ndarray,
    sample_rate_hz: int,
    start_s: float = 0.0,
    end_s: float | None = None,
    hop_s: float = 0.02,
    use_normalization: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame-level acoustic features of one utterance window.

    Args:
        audio: float mono samples ``(n_samples,)`` in [-1, 1] (16 kHz in mer).
        sample_rate_hz: their sampling rate.
        start_s, end_s: the window, seconds (``end_s=None``: to the end).
        hop_s: frame step, seconds.
        use_normalization: standardise each column over the window (see module docstring).

    Returns:
        ``features`` float32 ``(n_frames, D_AUDIO)`` and ``times_s`` float64 ``(n_frames,)``,
        the frame centres in seconds from the start of ``audio``. ``n_frames`` is
        ``1 + window_samples // hop`` (0 for an empty window).
    """
    measures = measure_frames(audio, sample_rate_hz, start_s, end_s, hop_s)
    return features_from_measures(measures, use_normalization), measures.times_s


def summarise(measures: FrameMeasures) -> AcousticSummary:
    """Report-level descriptors of measured frames."""
    if measures.n_frames == 0:
        return AcousticSummary(None, -100.0, 0.0)
    voiced = ~np.isnan(measures.f0_hz)
    # Mean power, not mean dB: a loud word in a quiet utterance should dominate, as it does to ears.
    mean_power = float(np.mean(10 ** (measures.energy_db / 10)))
    return AcousticSummary(
        mean_pitch_hz=float(np.mean(measures.f0_hz[voiced])) if voiced.any() else None,
        mean_energy_db=max(-100.0, 10 * float(np.log10(max(mean_power, _EPS)))),
        voiced_fraction=float(voiced.mean()),
    )


def acoustic_summary(
    audio: np.ndarray,
    sample_rate_hz: int,
    start_s: float = 0.0,
    end_s: float | None = None,
    hop_s: float = 0.02,
) -> AcousticSummary:
    """Mean pitch (Hz), mean energy (dBFS) and voiced share of one window, for reports."""
    return summarise(measure_frames(audio, sample_rate_hz, start_s, end_s, hop_s))
