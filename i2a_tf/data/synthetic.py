"""Generates a small synthetic emotion corpus: speech clips (WAV) and faces (PNG).

The demo must run with no download, so this module writes files that look, to
the project's corpus converters, like a real speech corpus and a real face
corpus: one folder per class, the speaker or subject as the file-name prefix
before the first `_`:

    <out_dir>/<class>/spk01_000.wav     16 kHz mono 16-bit PCM
    <out_dir>/<class>/subj01_000.png    48x48 8-bit grayscale

Speech is a source-filter voice model (a glottal pulse train with jitter and
shimmer, syllable envelopes, formant resonators, aspiration noise). Faces are
drawn cartoons (head, eyes, brows, nose, mouth). Each class has its own
prosody / expression; each speaker / subject has its own voice / face; each
file has its own random variation. Class, speaker and file effects overlap on
purpose, so that a classifier must learn something and a few labels do not
solve the task.

How hard, measured with simple linear probes on the default corpora (seeds
0-3; speaker- / subject-independent splits):

- speech, 8 speakers x 5 classes x 10 clips of 2 s: logistic regression on the
  per-clip mean and std of each band of a 64-band log-mel spectrogram (25 ms /
  10 ms), trained on 6 speakers and tested on the other 2 (4 folds): 52 %
  (49-54 %) with 10 % of the training clips labeled, 78 % (77-81 %) with all
  of them. EmoDB's 2-s copy, same probe and classes: 55 % and 69 %.
- faces, 12 subjects x 5 classes x 5 images: logistic regression on raw
  pixels, 4 subject folds: 75 % (72-79 %). CK+48, same probe: 85 %.

The main knobs are the module constants `_INTENSITY_RANGE`, `_SPEAKER_STYLE_SD`,
`_CLIP_SD`, `_MALE_VOICE` / `_FEMALE_VOICE` (speech) and
`_FACE_INTENSITY_RANGE`, `_FACE_SHIFT_SD`, `_FACE_TILT_SD_DEG`,
`_LIGHT_GRADIENT_MAX` (faces); re-measure after changing them.

Only numpy, scipy, soundfile and pillow are used (no TensorFlow), so tools can
import this module cheaply.

Determinism: every file gets its own random generator seeded from
(seed, class name, speaker / subject id, file index), so the same arguments
give byte-identical files whatever the generation order or process. Speaker
and subject traits are seeded from their ids alone, so `spk01` has the same
voice in a corpus of 4 speakers and in one of 40.
"""

import dataclasses
import os
import zlib

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw
from scipy import signal

SPEECH_CLASSES_DEFAULT = ("anger", "disgust", "fear", "happiness", "sadness")


# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------


def _rng(seed, *keys):
    """A generator seeded from an int seed and string keys (order-independent of use).

    crc32 rather than `hash()`: Python salts string hashes per process, and the
    corpus must be identical across processes.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    words = [int(seed)] + [zlib.crc32(str(k).encode("utf-8")) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def _ids(prefix, count):
    """Ids like spk01..spk08 (no `_`: converters split the prefix at the first `_`)."""
    if count < 1:
        raise ValueError(f"need at least one {prefix}, got {count}")
    width = max(2, len(str(count)))
    return [f"{prefix}{i + 1:0{width}d}" for i in range(count)]


def _check_classes(classes):
    classes = tuple(classes)
    if not classes:
        raise ValueError("classes must not be empty")
    for name in classes:
        if not name or "/" in name or os.sep in name:
            raise ValueError(f"class name {name!r} is not a usable folder name")
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate class names in {classes}")
    return classes


def _blend(neutral, target, amount):
    """Moves each field of `neutral` towards `target` by `amount` (0 = neutral)."""
    return type(neutral)(**{
        f.name: getattr(neutral, f.name)
                + amount * (getattr(target, f.name) - getattr(neutral, f.name))
        for f in dataclasses.fields(neutral)})


def _jitter_fields(params, rng, scales):
    """Adds N(0, scale) to the named fields of a frozen dataclass."""
    return dataclasses.replace(params, **{
        name: getattr(params, name) + rng.normal(0.0, scale)
        for name, scale in scales.items()})


def _add_fields(params, offsets):
    """Field-wise sum of two instances of the same frozen dataclass."""
    return type(params)(**{
        f.name: getattr(params, f.name) + getattr(offsets, f.name)
        for f in dataclasses.fields(params)})


# --------------------------------------------------------------------------
# Speech
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Prosody:
    """How one emotion is spoken, relative to a speaker's neutral voice."""

    pitch_st: float      # mean F0 offset from the speaker's base, semitones
    slope_st: float      # F0 change from the first to the last syllable, semitones
    accent_st: float     # size of per-syllable pitch accents, semitones
    rate_hz: float       # syllables per second
    energy: float        # relative peak level, ~[0.3, 0.9]
    tilt: float          # one-pole low-pass coefficient on the source; larger = darker
    jitter: float        # std of cycle-to-cycle relative F0 perturbation
    shimmer: float       # std of cycle-to-cycle relative amplitude perturbation
    breathiness: float   # aspiration noise level relative to voicing
    tremor_st: float     # depth of a 5-8 Hz F0 tremor, semitones
    open_quotient: float  # open fraction of the glottal cycle; larger = softer
    f1_shift: float      # relative F1 change (jaw opening)
    formant_shift: float  # relative shift of all formants (lip spreading, pharynx)
    pause_prob: float    # chance that a syllable slot is a pause


_NEUTRAL_PROSODY = _Prosody(
    pitch_st=0.0, slope_st=-1.5, accent_st=2.0, rate_hz=4.2, energy=0.6,
    tilt=0.5, jitter=0.006, shimmer=0.04, breathiness=0.12, tremor_st=0.0,
    open_quotient=0.55, f1_shift=0.0, formant_shift=0.0, pause_prob=0.10)

# Directions follow the acoustic-correlates literature (Scherer 2003; Banse &
# Scherer 1996): hot anger is loud, fast, pressed and bright with a falling
# contour; joy is high, variable and rising, with the formants of a smile;
# sadness is low, soft, slow, flat, dark and breathy; fear is high, fast,
# irregular (jitter, tremor) and breathy; disgust is low, slow, pausing and
# pharyngealised (lowered formants). Magnitudes are ours: large enough to
# learn, small enough that the speaker and the clip still matter.
_SPEECH_PROSODY = {
    "anger": _Prosody(
        pitch_st=5.0, slope_st=-6.0, accent_st=4.0, rate_hz=5.3, energy=0.9,
        tilt=0.02, jitter=0.012, shimmer=0.07, breathiness=0.03, tremor_st=0.0,
        open_quotient=0.32, f1_shift=0.16, formant_shift=0.0, pause_prob=0.05),
    "disgust": _Prosody(
        pitch_st=-3.0, slope_st=-3.5, accent_st=2.7, rate_hz=2.4, energy=0.46,
        tilt=0.57, jitter=0.025, shimmer=0.12, breathiness=0.16, tremor_st=0.0,
        open_quotient=0.48, f1_shift=0.0, formant_shift=-0.08, pause_prob=0.3),
    "fear": _Prosody(
        pitch_st=7.0, slope_st=2.0, accent_st=2.0, rate_hz=6.0, energy=0.53,
        tilt=0.5, jitter=0.04, shimmer=0.12, breathiness=0.42, tremor_st=1.1,
        open_quotient=0.65, f1_shift=0.0, formant_shift=0.03, pause_prob=0.13),
    "happiness": _Prosody(
        pitch_st=5.5, slope_st=4.5, accent_st=7.5, rate_hz=4.5, energy=0.74,
        tilt=0.39, jitter=0.006, shimmer=0.04, breathiness=0.09, tremor_st=0.0,
        open_quotient=0.48, f1_shift=0.07, formant_shift=0.1, pause_prob=0.07),
    "sadness": _Prosody(
        pitch_st=-3.5, slope_st=-0.8, accent_st=0.3, rate_hz=2.6, energy=0.3,
        tilt=0.88, jitter=0.014, shimmer=0.1, breathiness=0.5, tremor_st=0.3,
        open_quotient=0.78, f1_shift=-0.11, formant_shift=-0.03, pause_prob=0.24),
    "neutral": _NEUTRAL_PROSODY,
    "surprise": _Prosody(
        pitch_st=8.0, slope_st=7.0, accent_st=6.0, rate_hz=5.0, energy=0.74,
        tilt=0.36, jitter=0.009, shimmer=0.05, breathiness=0.16, tremor_st=0.0,
        open_quotient=0.5, f1_shift=0.14, formant_shift=0.04, pause_prob=0.1),
}

# Spread of the per-speaker way of expressing each emotion and of the per-clip
# variation. These, the expression-intensity range and the voice ranges below
# set how hard the task is; they were tuned with a log-mel + logistic-regression
# probe (see the module docstring).
_SPEAKER_STYLE_SD = dict(
    pitch_st=1.1, slope_st=1.1, accent_st=0.6, rate_hz=0.3, energy=0.045,
    tilt=0.06, breathiness=0.04)
_CLIP_SD = dict(
    pitch_st=1.1, slope_st=1.1, accent_st=0.6, rate_hz=0.3, energy=0.04,
    tilt=0.045, breathiness=0.03, jitter=0.0015, open_quotient=0.03)
_INTENSITY_RANGE = (0.55, 1.0)    # 0 = neutral voice, 1 = the table above
_PEAK_GAIN_SD = 0.12              # log-normal random gain on the peak level
_NOISE_FLOOR_DB = (-58.0, -50.0)  # background noise re the peak
_SILENCE_S = (0.08, 0.25)         # leading / trailing silence length
_FRICATIVE_PROB = 0.4             # chance of a fricative burst before a syllable

# Adult-male vowel formants F1..F3 in Hz (Peterson & Barney 1952), scaled per
# speaker by vocal-tract length.
_VOWEL_FORMANTS = np.array([
    [730.0, 1090.0, 2440.0],  # a
    [270.0, 2290.0, 3010.0],  # i
    [300.0, 870.0, 2240.0],   # u
    [530.0, 1840.0, 2480.0],  # e
    [570.0, 840.0, 2410.0],   # o
    [660.0, 1720.0, 2410.0],  # ae
    [490.0, 1350.0, 1690.0],  # er
])
_F4_HZ = 3400.0
_FORMANT_BANDWIDTHS_HZ = np.array([80.0, 100.0, 150.0, 220.0])
_FILTER_BLOCK_S = 0.01  # formants are updated every 10 ms, like an LPC frame


def _unknown_prosody(name):
    """A fixed, name-derived prosody for a class this module does not know."""
    rng = _rng(0, "speech-unknown-class", name)
    return _jitter_fields(_NEUTRAL_PROSODY, rng, dict(
        pitch_st=3.0, slope_st=2.0, accent_st=1.0, rate_hz=0.7, energy=0.12,
        tilt=0.15, breathiness=0.08))


def _class_prosody(name):
    return _SPEECH_PROSODY.get(name.lower()) or _unknown_prosody(name)


# (F0 range in Hz, formant-scale range) of male-like and female-like voices.
# Narrower than real adult voices: with the full range the speaker dominates
# a spectral probe and the classes drown (see the module docstring).
_MALE_VOICE = ((100.0, 150.0), (0.94, 1.02))
_FEMALE_VOICE = ((165.0, 225.0), (1.05, 1.13))


@dataclasses.dataclass(frozen=True)
class _Speaker:
    f0_hz: float          # neutral base F0
    formant_scale: float  # 1 / relative vocal-tract length
    loudness: float       # peak gain factor
    rate_factor: float    # personal speaking-rate factor
    tilt_offset: float
    breath_offset: float


def _make_speaker(seed, speaker_id, female):
    rng = _rng(seed, "speech-speaker", speaker_id)
    f0_range, scale_range = _FEMALE_VOICE if female else _MALE_VOICE
    f0, scale = rng.uniform(*f0_range), rng.uniform(*scale_range)
    return _Speaker(
        f0_hz=f0, formant_scale=scale, loudness=rng.uniform(0.8, 1.15),
        rate_factor=np.exp(rng.normal(0.0, 0.12)),
        tilt_offset=rng.normal(0.0, 0.07), breath_offset=rng.normal(0.0, 0.04))


def _speaker_style(seed, speaker_id, class_name):
    """How this speaker expresses this emotion: the class prosody, perturbed."""
    rng = _rng(seed, "speech-style", speaker_id, class_name)
    return _jitter_fields(_class_prosody(class_name), rng, _SPEAKER_STYLE_SD)


def _smooth_noise(rng, num_samples, sample_rate, knot_s):
    """Unit-variance-ish random curve through N(0,1) knots every `knot_s` seconds."""
    num_knots = int(num_samples / (knot_s * sample_rate)) + 2
    knots = rng.normal(0.0, 1.0, num_knots)
    positions = np.arange(num_samples) / (knot_s * sample_rate)
    return np.interp(positions, np.arange(num_knots), knots)


def _formant_filter(freqs_hz, bandwidths_hz, sample_rate):
    """All-pole cascade of resonators with unit gain at DC (Klatt cascade).

    Args:
      freqs_hz: [blocks, K] float, centre frequencies (< sample_rate / 2).
      bandwidths_hz: [K] float, 3-dB bandwidths.
      sample_rate: Hz.

    Returns:
      (gain [blocks] float64, a [blocks, 2K + 1] float64): the filter of block i
      is `scipy.signal.lfilter([gain[i]], a[i], ...)`. One direct-form filter
      per block rather than K second-order sections: it is several times
      cheaper per call, and the formants are well apart, so float64 is ample.
    """
    radius = np.exp(-np.pi * np.asarray(bandwidths_hz) / sample_rate)
    a1 = -2.0 * radius * np.cos(2.0 * np.pi * freqs_hz / sample_rate)
    a2 = np.broadcast_to(radius ** 2, a1.shape)
    a = np.ones((len(freqs_hz), 1))
    for k in range(a1.shape[1]):  # a *= (1 + a1 z^-1 + a2 z^-2), all blocks at once
        product = np.zeros((len(a), a.shape[1] + 2))
        product[:, :-2] += a
        product[:, 1:-1] += a * a1[:, k:k + 1]
        product[:, 2:] += a * a2[:, k:k + 1]
        a = product
    return np.sum(a, axis=1), a


def _synthesize_clip(rng, prosody, speaker, num_samples, sample_rate):
    """One utterance: silence, voiced syllables, silence.

    Args:
      rng: this clip's generator.
      prosody: `_Prosody` for this speaker, class and clip.
      speaker: `_Speaker`.
      num_samples: clip length.
      sample_rate: Hz.

    Returns:
      [num_samples] float64 waveform; the speech peaks at a level in
      [0.3, 0.9], under a noise floor 50-58 dB below that peak.
    """
    sr = sample_rate
    n = num_samples
    duration = n / sr
    # Leading / trailing silence: real corpora have it and the front end trims
    # it. Capped relative to the clip so very short clips keep voiced content.
    silence = (min(_SILENCE_S[0], 0.1 * duration),
               min(_SILENCE_S[1], 0.2 * duration))
    lead, trail = (int(sr * rng.uniform(*silence)) for _ in range(2))
    start, stop = lead, max(lead + 1, n - trail)
    voiced_len = stop - start
    t = np.arange(voiced_len)

    # Syllable plan: gamma-distributed lengths at the speaking rate; some slots
    # are pauses (never the first or the last, so the clip is voiced at both ends
    # of its middle part).
    rate = max(1.5, prosody.rate_hz * speaker.rate_factor)
    num_syll = max(1, int(round(voiced_len / sr * rate)))
    lengths = rng.gamma(6.0, 1.0 / 6.0, num_syll) + 0.2
    bounds = np.concatenate([[0.0], np.cumsum(lengths)]) * (voiced_len / np.sum(lengths))
    syll = np.minimum(np.searchsorted(bounds, t, side="right") - 1, num_syll - 1)
    pos = (t - bounds[syll]) / np.maximum(bounds[syll + 1] - bounds[syll], 1.0)
    stress = rng.uniform(0.55, 1.0, num_syll)
    pauses = rng.random(num_syll) < np.clip(prosody.pause_prob, 0.0, 0.5)
    pauses[[0, -1]] = False
    stress[pauses] = 0.0
    # Flat-topped syllable envelope; the exponent keeps consonant-like dips.
    envelope = stress[syll] * np.sin(np.pi * pos) ** 0.6

    # F0 contour in semitones around the speaker's base.
    u = t / max(voiced_len - 1, 1)
    accents = prosody.accent_st * rng.uniform(-0.4, 1.0, num_syll)
    semitones = (prosody.pitch_st
                 + prosody.slope_st * (u - 0.5)
                 + accents[syll] * np.sin(np.pi * pos)
                 + 0.8 * _smooth_noise(rng, voiced_len, sr, 0.25)
                 + prosody.tremor_st * np.sin(
                     2.0 * np.pi * rng.uniform(5.0, 8.0) * t / sr
                     + rng.uniform(0.0, 2.0 * np.pi)))
    f0 = np.clip(speaker.f0_hz * 2.0 ** (semitones / 12.0), 60.0, 500.0)

    # Jitter: one random factor per glottal cycle. Cycles are counted on the
    # smooth contour, then the phase is re-integrated with the perturbed F0.
    cycles = np.floor(np.cumsum(f0) / sr).astype(np.int64)
    jitter = max(prosody.jitter, 0.0)
    cycle_jitter = np.clip(rng.normal(0.0, jitter, cycles[-1] + 1), -0.2, 0.2)
    f0 = f0 * (1.0 + cycle_jitter[cycles])
    phase = np.cumsum(f0) / sr
    cycles = np.floor(phase).astype(np.int64)
    frac = phase - cycles
    shimmer = 1.0 + np.clip(
        rng.normal(0.0, max(prosody.shimmer, 0.0), cycles[-1] + 1), -0.5, 0.5)

    # Rosenberg glottal flow; its derivative (flow + lip radiation) is the
    # source. A smaller open quotient = a sharper closure = brighter voice.
    open_q = np.clip(prosody.open_quotient, 0.3, 0.85)
    rise, fall = 0.6 * open_q, 0.4 * open_q
    flow = np.where(
        frac < rise, 0.5 * (1.0 - np.cos(np.pi * frac / rise)),
        np.where(frac < open_q, np.cos(0.5 * np.pi * (frac - rise) / fall), 0.0))
    source = np.diff(flow, prepend=flow[0]) * (sr / f0) * shimmer[cycles]
    tilt = np.clip(prosody.tilt + speaker.tilt_offset, 0.0, 0.92)
    source = signal.lfilter([1.0 - tilt], [1.0, -tilt], source)
    source /= np.std(source) + 1e-12

    # Aspiration: noise that is louder while the glottis is open.
    breath = np.clip(prosody.breathiness + speaker.breath_offset, 0.02, 0.6)
    aspiration = breath * rng.normal(0.0, 1.0, voiced_len) * (0.4 + 0.6 * flow)
    excitation = (source + aspiration) * envelope

    # Formants: one vowel per syllable, interpolated between syllable centres
    # and updated block by block, carrying the filter state across blocks.
    vowels = _VOWEL_FORMANTS[rng.integers(0, len(_VOWEL_FORMANTS), num_syll)]
    vowels = vowels * rng.uniform(0.93, 1.07, vowels.shape)
    vowels[:, 0] *= 1.0 + prosody.f1_shift
    vowels = np.concatenate([vowels, np.full((num_syll, 1), _F4_HZ)], axis=1)
    vowels *= speaker.formant_scale * (1.0 + prosody.formant_shift)
    block = max(1, int(_FILTER_BLOCK_S * sr))
    block_starts = np.arange(0, voiced_len, block)
    centres = 0.5 * (bounds[:-1] + bounds[1:])
    freqs = np.stack([np.interp(block_starts + block / 2, centres, vowels[:, k])
                      for k in range(4)], axis=1)
    freqs = np.minimum(freqs, 0.45 * sr)
    bandwidths = _FORMANT_BANDWIDTHS_HZ * (1.0 + breath)
    gains, denominators = _formant_filter(freqs, bandwidths, sr)
    voiced = np.empty(voiced_len)
    state = np.zeros(denominators.shape[1] - 1)
    for b, s in enumerate(block_starts):
        voiced[s:s + block], state = signal.lfilter(
            gains[b:b + 1], denominators[b], excitation[s:s + block], zi=state)

    # Fricative-like bursts (/s/, /f/) at some syllable onsets: band-passed
    # noise outside the formant cascade, whose constriction is near the lips.
    hiss = np.zeros(voiced_len)
    onsets = np.flatnonzero((rng.random(num_syll) < _FRICATIVE_PROB) & ~pauses)
    for onset in bounds[onsets].astype(np.int64):
        length = int(sr * rng.uniform(0.05, 0.1))
        seg = slice(onset, min(onset + length, voiced_len))
        hiss[seg] += rng.uniform(0.05, 0.2) * np.hanning(length)[:seg.stop - seg.start]
    if onsets.size:
        band = signal.butter(2, [2500.0, min(7000.0, 0.45 * sr)], "bandpass",
                             fs=sr, output="sos")
        hiss *= signal.sosfilt(band, rng.normal(0.0, 1.0, voiced_len))
        voiced += hiss * np.std(voiced)

    # Level: the class energy, speaker loudness and a random gain set the peak,
    # so loudness carries information without deciding the class.
    gain = np.exp(rng.normal(0.0, _PEAK_GAIN_SD))
    peak = np.clip(prosody.energy * speaker.loudness * gain, 0.3, 0.9)
    waveform = np.zeros(n)
    waveform[start:stop] = voiced * (peak / (np.max(np.abs(voiced)) + 1e-12))
    floor_db = rng.uniform(*_NOISE_FLOOR_DB)
    waveform += rng.normal(0.0, peak * 10.0 ** (floor_db / 20.0), n)
    return waveform


def _clip_duration(duration_s, rng):
    if np.ndim(duration_s) == 0:
        low = high = float(duration_s)
    else:
        low, high = (float(d) for d in duration_s)
    if not 0.0 < low <= high:
        raise ValueError(
            f"duration_s must be > 0 or a (min, max) pair, got {duration_s!r}")
    return rng.uniform(low, high) if high > low else low


def generate_speech_corpus(out_dir, classes=SPEECH_CLASSES_DEFAULT, num_speakers=8,
                           clips_per_speaker_per_class=10, duration_s=2.0,
                           sample_rate=16000, seed=0):
    """Writes a synthetic emotional-speech corpus of WAV files.

    Layout: `out_dir/<class>/<speaker>_<nnn>.wav`, speakers `spk01`, `spk02`, ...
    (odd-numbered speakers male-like, even female-like), `nnn` from `000`.
    Directories are created and existing files overwritten; other files already
    in `out_dir` are left alone.

    Args:
      out_dir: root folder (str or path-like).
      classes: class names; each becomes a folder. Known emotions (the defaults,
        `neutral`, `surprise`) get hand-set prosody, other names a fixed
        name-derived one.
      num_speakers: number of speakers, >= 1.
      clips_per_speaker_per_class: clips per (speaker, class), >= 1.
      duration_s: clip length in seconds, a float, or a `(min, max)` pair to draw
        each clip's length uniformly.
      sample_rate: Hz.
      seed: non-negative int; the same arguments give byte-identical files.

    Returns:
      Sorted list of the written paths (str). Each file: mono, 16-bit PCM,
      `sample_rate` Hz; voiced speech peaking at 0.3-0.9 of full scale between
      a leading and a trailing stretch of low noise (50-58 dB below the peak),
      each 80-250 ms long (at most a fifth of the clip for clips under 1.25 s).
    """
    classes = _check_classes(classes)
    if clips_per_speaker_per_class < 1:
        raise ValueError("clips_per_speaker_per_class must be >= 1")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be >= 8000 Hz, got {sample_rate}")
    speaker_ids = _ids("spk", num_speakers)
    paths = []
    for class_name in classes:
        class_dir = os.path.join(os.fspath(out_dir), class_name)
        os.makedirs(class_dir, exist_ok=True)
        for index, speaker_id in enumerate(speaker_ids):
            speaker = _make_speaker(seed, speaker_id, female=index % 2 == 1)
            style = _speaker_style(seed, speaker_id, class_name)
            for n in range(clips_per_speaker_per_class):
                rng = _rng(seed, "speech-clip", class_name, speaker_id, n)
                num_samples = max(1, round(_clip_duration(duration_s, rng) * sample_rate))
                # Expression intensity varies per clip: mild clips sit near neutral.
                prosody = _blend(_NEUTRAL_PROSODY, style, rng.uniform(*_INTENSITY_RANGE))
                prosody = _jitter_fields(prosody, rng, _CLIP_SD)
                waveform = _synthesize_clip(rng, prosody, speaker, num_samples, sample_rate)
                pcm = np.round(waveform * 32767.0).astype(np.int16)
                path = os.path.join(class_dir, f"{speaker_id}_{n:03d}.wav")
                sf.write(path, pcm, sample_rate, subtype="PCM_16", format="WAV")
                paths.append(path)
    return sorted(paths)


# --------------------------------------------------------------------------
# Faces
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Expression:
    """Facial action parameters, in fractions of the canvas size unless noted."""

    mouth_curve: float   # corner lift; > 0 smile, < 0 frown
    mouth_open: float    # gap between the lips at the centre
    mouth_width: float   # relative to the subject's mouth width
    lip_raise: float     # one-sided upper-lip raise (disgust)
    brow_raise: float    # extra brow height above the eye
    brow_slant: float    # inner-end lift; > 0 worried/sad, < 0 angry
    eye_open: float      # relative eye-opening height
    nose_wrinkle: float  # 0..1, wrinkle lines on the nose bridge


_NEUTRAL_EXPRESSION = _Expression(
    mouth_curve=0.0, mouth_open=0.0, mouth_width=1.0, lip_raise=0.0,
    brow_raise=0.0, brow_slant=0.0, eye_open=1.0, nose_wrinkle=0.0)

# Shapes follow FACS prototypes (Ekman & Friesen): anger AU4+5+7+23, disgust
# AU9+10, fear AU1+2+4+5+20+26, happiness AU6+12, sadness AU1+4+15.
_FACE_EXPRESSIONS = {
    "anger": _Expression(
        mouth_curve=-0.02, mouth_open=0.0, mouth_width=0.78, lip_raise=0.0,
        brow_raise=-0.035, brow_slant=-0.07, eye_open=0.55, nose_wrinkle=0.4),
    "disgust": _Expression(
        mouth_curve=-0.03, mouth_open=0.02, mouth_width=0.95, lip_raise=0.045,
        brow_raise=-0.02, brow_slant=-0.02, eye_open=0.55, nose_wrinkle=1.0),
    "fear": _Expression(
        mouth_curve=-0.015, mouth_open=0.08, mouth_width=1.1, lip_raise=0.0,
        brow_raise=0.05, brow_slant=0.03, eye_open=1.6, nose_wrinkle=0.0),
    "happiness": _Expression(
        mouth_curve=0.08, mouth_open=0.04, mouth_width=1.3, lip_raise=0.0,
        brow_raise=0.01, brow_slant=0.0, eye_open=0.7, nose_wrinkle=0.0),
    "sadness": _Expression(
        mouth_curve=-0.06, mouth_open=0.0, mouth_width=0.9, lip_raise=0.0,
        brow_raise=0.015, brow_slant=0.06, eye_open=0.75, nose_wrinkle=0.0),
    "neutral": _NEUTRAL_EXPRESSION,
    "surprise": _Expression(
        mouth_curve=0.0, mouth_open=0.11, mouth_width=0.85, lip_raise=0.0,
        brow_raise=0.07, brow_slant=0.0, eye_open=1.7, nose_wrinkle=0.0),
    # CK+ has contempt: a one-sided smirk.
    "contempt": _Expression(
        mouth_curve=0.01, mouth_open=0.0, mouth_width=1.0, lip_raise=-0.03,
        brow_raise=0.0, brow_slant=0.0, eye_open=0.85, nose_wrinkle=0.0),
}

# Per-subject resting face and per-image noise on the expression parameters.
_SUBJECT_REST_SD = dict(
    mouth_curve=0.012, brow_raise=0.01, brow_slant=0.012, eye_open=0.12)
_IMAGE_EXPRESSION_SD = dict(
    mouth_curve=0.01, mouth_open=0.008, mouth_width=0.06, brow_raise=0.008,
    brow_slant=0.01, eye_open=0.1)
_FACE_INTENSITY_RANGE = (0.65, 1.0)  # 0 = neutral face, 1 = the table above
_FACE_SHIFT_SD = 0.01          # head position, fraction of the image
_FACE_TILT_SD_DEG = 2.5        # in-plane head rotation
_LIGHT_GRADIENT_MAX = 0.3      # brightness ratio across the image, side to side
_EXPOSURE_RANGE = (0.88, 1.12)  # global brightness factor
_PIXEL_NOISE_SD = (3.0, 10.0)  # sensor noise, gray levels
_SUPERSAMPLE = 4  # draw at 4x and downsample: antialiased edges like a photo


def _unknown_expression(name):
    rng = _rng(0, "face-unknown-class", name)
    return _jitter_fields(_NEUTRAL_EXPRESSION, rng, dict(
        mouth_curve=0.03, mouth_open=0.03, mouth_width=0.15, brow_raise=0.025,
        brow_slant=0.03, eye_open=0.3))


def _class_expression(name):
    return _FACE_EXPRESSIONS.get(name.lower()) or _unknown_expression(name)


@dataclasses.dataclass(frozen=True)
class _Subject:
    face_width: float    # head ellipse width / canvas
    face_height: float   # head ellipse height / canvas
    skin: float          # gray level 0..255
    background: float
    hair: float          # hair gray level; < 0 means no visible hair
    fringe_deg: float    # half-angle of the hair cap over the top of the head
    eye_spacing: float   # half the distance between eye centres
    eye_y: float
    eye_width: float
    eye_height: float
    brow_gap: float      # neutral brow height above the eye centre
    brow_thickness: float
    nose_length: float
    mouth_y: float
    mouth_width: float
    lip_thickness: float
    rest: _Expression    # resting-face offsets, added to every expression
    smirk_side: int      # side of a one-sided lip raise, -1 or +1


def _make_subject(seed, subject_id):
    rng = _rng(seed, "face-subject", subject_id)
    skin = rng.uniform(110.0, 200.0)
    # The background contrasts with the skin, as in a cropped photo.
    contrast = rng.uniform(45.0, 100.0)
    darker = rng.random() < 0.5 or skin + contrast > 245.0
    background = skin - contrast if darker else skin + contrast
    no_offset = _Expression(*[0.0] * len(dataclasses.fields(_Expression)))
    rest = _jitter_fields(no_offset, rng, _SUBJECT_REST_SD)
    return _Subject(
        face_width=rng.uniform(0.95, 1.05), face_height=rng.uniform(1.15, 1.3),
        skin=skin, background=background,
        hair=rng.uniform(15.0, 90.0) if rng.random() < 0.7 else -1.0,
        fringe_deg=rng.uniform(40.0, 65.0),
        eye_spacing=rng.uniform(0.185, 0.215), eye_y=rng.uniform(0.37, 0.41),
        eye_width=rng.uniform(0.14, 0.17), eye_height=rng.uniform(0.05, 0.065),
        brow_gap=rng.uniform(0.065, 0.085), brow_thickness=rng.uniform(0.028, 0.04),
        nose_length=rng.uniform(0.2, 0.25), mouth_y=rng.uniform(0.77, 0.81),
        mouth_width=rng.uniform(0.28, 0.34), lip_thickness=rng.uniform(0.02, 0.03),
        rest=rest, smirk_side=int(rng.choice([-1, 1])))


def _draw_face(rng, subject, expr, canvas):
    """Draws one face, before downsampling and lighting.

    Args:
      rng: this image's generator (head position and tilt).
      subject: `_Subject`.
      expr: `_Expression`, the subject's resting offsets already added.
      canvas: side of the square drawing in pixels.

    Returns:
      A `canvas` x `canvas` PIL image, mode 'L'.
    """
    s = float(canvas)
    img = Image.new("L", (canvas, canvas), int(subject.background))
    draw = ImageDraw.Draw(img)
    cx = 0.5 + rng.normal(0.0, _FACE_SHIFT_SD)
    cy = 0.52 + rng.normal(0.0, _FACE_SHIFT_SD)

    def px(x, y):
        return (x * s, y * s)

    def box(x, y, half_w, half_h):
        return [*px(x - half_w, y - half_h), *px(x + half_w, y + half_h)]

    def ellipse(x, y, half_w, half_h, fill):
        draw.ellipse(box(x, y, half_w, half_h), fill=int(fill))

    skin = subject.skin
    head = box(cx, cy + 0.06, subject.face_width / 2, subject.face_height / 2)
    if subject.hair >= 0:  # hair behind the head shows at the sides, plus a cap
        ellipse(cx, cy, subject.face_width / 2 + 0.05, subject.face_height / 2,
                subject.hair)
    draw.ellipse(head, fill=int(skin))
    if subject.hair >= 0:
        draw.chord(head, 270.0 - subject.fringe_deg, 270.0 + subject.fringe_deg,
                   fill=int(subject.hair))

    dark = max(skin - 110.0, 5.0)   # features are darker than the skin
    lip = max(skin - 55.0, 10.0)
    eye_y = subject.eye_y + (cy - 0.52)
    for side in (-1.0, 1.0):
        ex = cx + side * subject.eye_spacing
        half_w = subject.eye_width / 2
        half_h = max(subject.eye_height * expr.eye_open / 2, 0.004)
        ellipse(ex, eye_y, half_w, half_h, min(skin + 60.0, 250.0))   # sclera
        # The iris is cut by the lids when the eye narrows.
        ellipse(ex, eye_y, half_w * 0.45, min(half_h, half_w * 0.45), dark)
        # Upper lid line: a heavier line when the eye is narrowed.
        lid_w = max(2, int(s * (0.012 + 0.01 * max(0.0, 1.0 - expr.eye_open))))
        draw.arc(box(ex, eye_y, half_w, half_h), 180, 360, fill=int(dark), width=lid_w)
        # Brow: inner end near the nose, outer end above the eye's outer corner.
        brow_y = eye_y - subject.brow_gap - expr.brow_raise
        inner = (ex - side * half_w * 0.9, brow_y - expr.brow_slant)
        outer = (ex + side * half_w * 1.2, brow_y + 0.01 + 0.3 * expr.brow_slant)
        middle = ((inner[0] + outer[0]) / 2, brow_y - 0.012)
        draw.line([px(*inner), px(*middle), px(*outer)], fill=int(dark),
                  width=max(2, int(s * subject.brow_thickness)), joint="curve")

    # Nose: bridge shading and nostrils; wrinkles for disgust / anger.
    nose_top, nose_tip = eye_y + 0.03, eye_y + subject.nose_length
    draw.line([px(cx - 0.02, nose_top), px(cx - 0.03, nose_tip)],
              fill=int(skin - 35.0), width=max(1, int(s * 0.01)))
    for side in (-1.0, 1.0):
        ellipse(cx + side * 0.035, nose_tip + 0.01, 0.018, 0.01, dark + 20.0)
    for k in range(int(round(3 * np.clip(expr.nose_wrinkle, 0.0, 1.0)))):
        y = nose_top + 0.02 + 0.022 * k
        draw.line([px(cx - 0.04, y), px(cx + 0.04, y - 0.004)], fill=int(skin - 45.0),
                  width=max(1, int(s * 0.008)))

    # Mouth: upper and lower lip curves; a parabola through the corners.
    mouth_y = subject.mouth_y + (cy - 0.52)
    half = subject.mouth_width * max(expr.mouth_width, 0.5) / 2
    x = np.linspace(-1.0, 1.0, 25)
    # The one-sided raise peaks halfway between the centre and one corner.
    raised_side = np.clip(x * subject.smirk_side, 0.0, 1.0) * (1.0 - x ** 2) * 2.5
    upper = mouth_y - expr.mouth_curve * x ** 2 - expr.lip_raise * raised_side
    lower = upper + max(expr.mouth_open, 0.0) * (1.0 - x ** 2)
    upper_pts = [px(cx + half * xi, yi) for xi, yi in zip(x, upper)]
    lower_pts = [px(cx + half * xi, yi) for xi, yi in zip(x, lower)]
    if expr.mouth_open > 0.004:
        draw.polygon(upper_pts + lower_pts[::-1], fill=int(max(dark - 20.0, 0.0)))
        if expr.mouth_curve > 0.02:  # a broad smile shows teeth
            teeth = [px(cx + half * 0.7 * xi, yi + 0.35 * (lo - yi))
                     for xi, yi, lo in zip(x, upper, lower)]
            draw.polygon(upper_pts[3:-3] + teeth[::-1][3:-3],
                         fill=int(min(skin + 50.0, 245.0)))
    lip_px = max(2, int(s * subject.lip_thickness))
    draw.line(upper_pts, fill=int(lip), width=lip_px, joint="curve")
    draw.line(lower_pts, fill=int(lip), width=lip_px, joint="curve")

    tilt = rng.normal(0.0, _FACE_TILT_SD_DEG)
    return img.rotate(tilt, resample=Image.BICUBIC, fillcolor=int(subject.background))


def generate_face_corpus(out_dir, classes=SPEECH_CLASSES_DEFAULT, num_subjects=12,
                         images_per_subject_per_class=5, image_size=48, seed=0):
    """Writes a synthetic facial-expression corpus of PNG files.

    Layout: `out_dir/<class>/<subject>_<nnn>.png`, subjects `subj01`, ...
    Directories are created and existing files overwritten.

    Args:
      out_dir: root folder (str or path-like).
      classes: class names; each becomes a folder. Known expressions (the
        defaults, `neutral`, `surprise`, `contempt`) get hand-set shapes, other
        names a fixed name-derived one.
      num_subjects: number of subjects, >= 1.
      images_per_subject_per_class: images per (subject, class), >= 1.
      image_size: output side length in pixels (square), >= 16.
      seed: non-negative int; the same arguments give byte-identical files.

    Returns:
      Sorted list of the written paths (str). Each file: 8-bit grayscale
      ('L'), `image_size` x `image_size`, values 0..255, a tightly cropped face
      like CK+48.
    """
    classes = _check_classes(classes)
    if images_per_subject_per_class < 1:
        raise ValueError("images_per_subject_per_class must be >= 1")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    subject_ids = _ids("subj", num_subjects)
    subjects = {sid: _make_subject(seed, sid) for sid in subject_ids}
    canvas = image_size * _SUPERSAMPLE
    yy, xx = np.mgrid[0:image_size, 0:image_size] / (image_size - 1) - 0.5
    paths = []
    for class_name in classes:
        class_dir = os.path.join(os.fspath(out_dir), class_name)
        os.makedirs(class_dir, exist_ok=True)
        target = _class_expression(class_name)
        for subject_id in subject_ids:
            subject = subjects[subject_id]
            for n in range(images_per_subject_per_class):
                rng = _rng(seed, "face-image", class_name, subject_id, n)
                intensity = rng.uniform(*_FACE_INTENSITY_RANGE)
                expr = _blend(_NEUTRAL_EXPRESSION, target, intensity)
                expr = _jitter_fields(expr, rng, _IMAGE_EXPRESSION_SD)
                expr = _add_fields(expr, subject.rest)
                img = _draw_face(rng, subject, expr, canvas)
                img = img.resize((image_size, image_size), Image.LANCZOS)
                # Lighting: a linear gradient in a random direction and a random
                # exposure; then sensor noise.
                pixels = np.asarray(img, dtype=np.float64)
                angle = rng.uniform(0.0, 2.0 * np.pi)
                gradient = np.cos(angle) * xx + np.sin(angle) * yy
                pixels *= rng.uniform(*_EXPOSURE_RANGE) * (
                    1.0 + rng.uniform(0.0, _LIGHT_GRADIENT_MAX) * gradient)
                pixels += rng.normal(0.0, rng.uniform(*_PIXEL_NOISE_SD), pixels.shape)
                pixels = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
                path = os.path.join(class_dir, f"{subject_id}_{n:03d}.png")
                Image.fromarray(pixels, mode="L").save(path, format="PNG")
                paths.append(path)
    return sorted(paths)
