"""The typed, frozen configuration tree every library function receives.

`main.py` turns absl flags into a `Config` with `config_from_flat`; nothing below
`main.py` reads flags. Every leaf field of every sub-config is also a flag of the
same name (field names are unique across the tree), so an error can always name
the flag at fault: `ConfigError("--label_fraction=1.5: must be in (0, 1]")`.

Each field carries its flag help text in `metadata["help"]`, so flags, their
defaults and the config cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from typing import Any, Mapping

SPEECH_CORPORA = ("synthetic", "emodb", "ravdess", "cremad", "tess", "folder")
FACE_CORPORA = ("synthetic", "ckplus", "fer2013", "jaffe", "folder")
PAD_MODES = ("repeat", "mean")
SPEAKER_NORMALISATIONS = ("none", "mean", "mean_std")
TFLITE_VARIANTS = ("float32", "dynamic_range", "int8")
INT8_FRONTENDS = ("float", "int8")
INT8_WEIGHTS = ("auto", "per_channel", "per_tensor")
PREPARE_RUNNERS = ("local", "beam")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the flag and value."""


def _field(default, help_text: str):
    if isinstance(default, (list, tuple)):
        return dataclasses.field(
            default_factory=lambda: tuple(default), metadata={"help": help_text}
        )
    return dataclasses.field(default=default, metadata={"help": help_text})


def _bad(name: str, value: Any, why: str) -> ConfigError:
    if isinstance(value, tuple):
        value = ",".join(str(v) for v in value)
    return ConfigError(f"--{name}={value}: {why}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raises `--name=value: must be one of ...` unless value is in choices."""
    if value not in choices:
        raise _bad(name, value, f"must be one of {', '.join(choices)}")


@dataclasses.dataclass(frozen=True)
class FrontEndConfig:
    """Log-mel front end (DESIGN.md "Audio front end")."""

    sample_rate: int = _field(16000, "Sample rate (Hz) of stored and served audio.")
    window_ms: float = _field(25.0, "STFT window length in milliseconds.")
    hop_ms: float = _field(10.0, "STFT hop in milliseconds.")
    num_mels: int = _field(64, "Number of mel bands.")
    fmin_hz: float = _field(0.0, "Lowest mel band edge (Hz).")
    fmax_hz: float = _field(8000.0, "Highest mel band edge (Hz).")
    log_eps: float = _field(1e-6, "Floor added to mel power before the log.")
    num_frames: int = _field(200, "Frames T per example after crop/pad (10 ms each).")
    trim_db: float = _field(
        40.0,
        "Frames quieter than the loudest frame by more than this many dB are "
        "leading/trailing silence and are cropped away (0 disables trimming).",
    )
    pad_mode: str = _field(
        "repeat",
        "How clips shorter than num_frames are filled: 'repeat' tiles the voiced "
        "frames, 'mean' pads with the band means (0 after normalisation).",
    )

    speaker_normalisation: str = _field(
        "none",
        "Per-speaker normalisation of the log-mel bands: 'none' (the training "
        "split's band statistics for everyone), 'mean' (subtract the speaker's "
        "own band means, then divide by the training split's std) or 'mean_std' "
        "(the speaker's own band means and stds). A speaker's statistics come "
        "from the voiced frames of all of that speaker's prepared clips (those "
        "of the configured classes) in every split, their labels unread: a test "
        "speaker is normalised with its own test clips, and a served model needs "
        "the speaker's summed moments as an input (its speaker_moments "
        "signature computes them from clips).",
    )

    @property
    def frame_length(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000.0))

    @property
    def frame_step(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000.0))

    @property
    def fft_length(self) -> int:
        return 1 << (self.frame_length - 1).bit_length()

    def validate(self) -> None:
        if self.sample_rate <= 0:
            raise _bad("sample_rate", self.sample_rate, "must be positive")
        if self.window_ms <= 0 or self.frame_length < 2:
            raise _bad("window_ms", self.window_ms, "must give a window of >= 2 samples")
        if self.hop_ms <= 0 or self.frame_step < 1:
            raise _bad("hop_ms", self.hop_ms, "must give a hop of >= 1 sample")
        if self.num_mels <= 0:
            raise _bad("num_mels", self.num_mels, "must be positive")
        if not 0 <= self.fmin_hz < self.fmax_hz:
            raise _bad("fmin_hz", self.fmin_hz, f"must be in [0, fmax_hz={self.fmax_hz})")
        if self.fmax_hz > self.sample_rate / 2:
            raise _bad("fmax_hz", self.fmax_hz,
                       f"must not exceed the Nyquist frequency {self.sample_rate / 2}")
        if self.log_eps <= 0:
            raise _bad("log_eps", self.log_eps, "must be positive")
        if self.num_frames <= 0:
            raise _bad("num_frames", self.num_frames, "must be positive")
        if self.trim_db < 0:
            raise _bad("trim_db", self.trim_db, "must be >= 0 (0 disables trimming)")
        _check_choice("pad_mode", self.pad_mode, PAD_MODES)
        _check_choice("speaker_normalisation", self.speaker_normalisation,
                      SPEAKER_NORMALISATIONS)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which corpora to read, the label space and the speaker-independent split."""

    speech_corpus: str = _field(
        "synthetic", f"Speech corpus layout: {', '.join(SPEECH_CORPORA)}.")
    speech_dir: str = _field(
        "", "Speech corpus folder (ignored for 'synthetic', which is generated "
        "under <workdir>/synthetic/speech).")
    face_corpus: str = _field(
        "synthetic", f"Face corpus layout: {', '.join(FACE_CORPORA)}.")
    face_dir: str = _field(
        "", "Face corpus folder, or the fer2013.csv file for 'fer2013' (ignored "
        "for 'synthetic').")
    classes: tuple = _field(
        ("anger", "disgust", "fear", "happiness", "sadness"),
        "Canonical class list; the class id is the position in this list.")
    label_map: tuple = _field(
        (), "Extra corpus-label to canonical-class mappings 'from:to', added to the "
        "built-in synonyms (e.g. 'angry:anger'). Labels mapping to no class are "
        "dropped and reported.")
    test_speakers: tuple = _field(
        (), "Test speakers (ids as the converter reports them). Empty: chosen by "
        "test_fold or test_speaker_fraction.")
    num_folds: int = _field(5, "Speaker folds for test_fold.")
    test_fold: int = _field(
        -1, "If >= 0 and test_speakers is empty: the test speakers are fold "
        "test_fold of num_folds contiguous folds of the sorted speaker list.")
    test_speaker_fraction: float = _field(
        0.2, "Fraction of speakers held out for test when neither test_speakers "
        "nor test_fold is set (seeded).")
    val_speakers: tuple = _field((), "Validation speakers (optional).")
    val_speaker_fraction: float = _field(
        0.0, "Fraction of the non-test speakers held out for validation when "
        "val_speakers is empty (seeded; 0 = no validation split).")
    label_fraction: float = _field(
        0.1, "Fraction of training clips that keep their label, stratified per "
        "class; the rest form the unlabeled split. In (0, 1].")
    seed: int = _field(0, "Seed of the split, the labeled subset and the synthetic corpus.")
    face_size: int = _field(48, "Face images are resized to face_size x face_size.")
    min_duration_s: float = _field(
        0.5, "Clips shorter than this after decoding are skipped as too short.")
    records_per_shard: int = _field(256, "TFRecord shard size (records per file).")
    precompute_logmel: bool = _field(
        False, "Also write log-mel records (a faster second record kind).")
    prepare_runner: str = _field(
        "local", "How --mode=prepare runs: 'local' (in this process) or 'beam' (an "
        "Apache Beam pipeline whose statistics come from tf.Transform analyzers; "
        "needs pip install '.[beam]'). Both write the same records and JSON files.")
    beam_pipeline_args: str = _field(
        "", "With --prepare_runner=beam: Beam pipeline options, space-separated as "
        "on a command line, e.g. '--runner=DirectRunner --direct_num_workers=2 "
        "--direct_running_mode=multi_processing' (empty: the DirectRunner in this "
        "process).")
    synthetic_speakers: int = _field(8, "Speakers in the generated speech corpus.")
    synthetic_clips_per_class: int = _field(
        10, "Clips per speaker and class in the generated speech corpus.")
    synthetic_subjects: int = _field(12, "Subjects in the generated face corpus.")
    synthetic_images_per_class: int = _field(
        5, "Images per subject and class in the generated face corpus.")

    def validate(self) -> None:
        if self.speech_corpus not in SPEECH_CORPORA:
            raise _bad("speech_corpus", self.speech_corpus,
                       f"unknown corpus; choose one of {', '.join(SPEECH_CORPORA)}")
        if self.face_corpus not in FACE_CORPORA:
            raise _bad("face_corpus", self.face_corpus,
                       f"unknown corpus; choose one of {', '.join(FACE_CORPORA)}")
        if self.speech_corpus != "synthetic":
            if not self.speech_dir:
                raise _bad("speech_dir", self.speech_dir,
                           f"required for --speech_corpus={self.speech_corpus}")
            if not os.path.isdir(self.speech_dir):
                raise _bad("speech_dir", self.speech_dir, "no such directory")
        if self.face_corpus != "synthetic":
            if not self.face_dir:
                raise _bad("face_dir", self.face_dir,
                           f"required for --face_corpus={self.face_corpus}")
            if not os.path.exists(self.face_dir):
                raise _bad("face_dir", self.face_dir, "no such file or directory")
        if len(self.classes) < 2:
            raise _bad("classes", self.classes, "needs at least two classes")
        if len(set(self.classes)) != len(self.classes):
            raise _bad("classes", self.classes, "classes must be distinct")
        for entry in self.label_map:
            if entry.count(":") != 1 or not all(entry.split(":")):
                raise _bad("label_map", self.label_map,
                           f"entry '{entry}' is not of the form from:to")
            if entry.split(":")[1].strip() not in self.classes:
                raise _bad("label_map", self.label_map,
                           f"entry '{entry}' maps to a class not in --classes")
        if self.num_folds < 2:
            raise _bad("num_folds", self.num_folds, "must be >= 2")
        if self.test_fold >= self.num_folds:
            raise _bad("test_fold", self.test_fold,
                       f"must be < num_folds={self.num_folds} (or -1)")
        if not 0 < self.test_speaker_fraction < 1:
            raise _bad("test_speaker_fraction", self.test_speaker_fraction,
                       "must be in (0, 1)")
        if not 0 <= self.val_speaker_fraction < 1:
            raise _bad("val_speaker_fraction", self.val_speaker_fraction,
                       "must be in [0, 1)")
        overlap = set(self.test_speakers) & set(self.val_speakers)
        if overlap:
            raise _bad("val_speakers", self.val_speakers,
                       f"speakers {sorted(overlap)} are also test speakers")
        if not 0 < self.label_fraction <= 1:
            raise _bad("label_fraction", self.label_fraction, "must be in (0, 1]")
        if self.face_size < 8:
            raise _bad("face_size", self.face_size, "must be >= 8")
        if self.min_duration_s < 0:
            raise _bad("min_duration_s", self.min_duration_s, "must be >= 0")
        if self.records_per_shard < 1:
            raise _bad("records_per_shard", self.records_per_shard, "must be >= 1")
        _check_choice("prepare_runner", self.prepare_runner, PREPARE_RUNNERS)
        if self.beam_pipeline_args:
            if self.prepare_runner != "beam":
                raise _bad("beam_pipeline_args", self.beam_pipeline_args,
                           "only used with --prepare_runner=beam")
            try:
                shlex.split(self.beam_pipeline_args)
            except ValueError as error:
                raise _bad("beam_pipeline_args", self.beam_pipeline_args,
                           f"does not parse as a command line: {error}") from error
        for name in ("synthetic_speakers", "synthetic_clips_per_class",
                     "synthetic_subjects", "synthetic_images_per_class"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be >= 1")
        if self.speech_corpus == "synthetic" and self.synthetic_speakers < 3:
            raise _bad("synthetic_speakers", self.synthetic_speakers,
                       "needs >= 3 speakers for a train/test split")


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """tf.data input pipelines."""

    labeled_batch_size: int = _field(16, "Global batch size of labeled clips.")
    unlabeled_batch_size: int = _field(32, "Global batch size of unlabeled clips.")
    face_batch_size: int = _field(32, "Global batch size of face images.")
    eval_batch_size: int = _field(64, "Batch size for evaluation and embedding.")
    shuffle_buffer: int = _field(2048, "Shuffle buffer (examples) per stream.")
    deterministic: bool = _field(
        True, "Same flags, same result: TensorFlow's op determinism and a seeded, "
        "ordered input pipeline (--nodeterministic is faster; the cost is "
        "measured in BUILD.md).")
    use_precomputed_logmel: bool = _field(
        False, "Read the precomputed log-mel records (prepare with "
        "--precompute_logmel) instead of raw waveforms.")
    spec_augment: bool = _field(True, "SpecAugment masks on training log-mels.")
    freq_mask_bands: int = _field(8, "Maximum width (bands) of a frequency mask.")
    time_mask_frames: int = _field(20, "Maximum width (frames) of a time mask.")
    num_freq_masks: int = _field(1, "Frequency masks per example.")
    num_time_masks: int = _field(2, "Time masks per example.")
    face_flip: bool = _field(True, "Random horizontal flips of training faces.")
    cache: bool = _field(
        True, "Cache parsed training examples in memory after the first pass "
        "(before any random crop or augmentation).")
    unlabeled_test_clips: bool = _field(
        False, "Also use the test split's clips as unlabeled clips (their labels "
        "unread): pseudo-labels, consistency and the discriminator see the test "
        "speakers' audio. A transductive protocol, to be stated with any figure it "
        "produces; the test split is still scored as before.")
    unlabeled_train_clips: bool = _field(
        True, "The training speakers' unlabeled clips (train_unlabeled) form the "
        "unlabeled pool. --nounlabeled_train_clips with --unlabeled_test_clips: the "
        "test speakers' clips alone, so every unlabeled batch is theirs (the "
        "transductive protocol, adapting to the test speakers).")

    def validate(self) -> None:
        for name in ("labeled_batch_size", "unlabeled_batch_size", "face_batch_size",
                     "eval_batch_size", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be >= 1")
        if not (self.unlabeled_train_clips or self.unlabeled_test_clips):
            raise _bad("unlabeled_train_clips", False,
                       "with --unlabeled_test_clips=False the unlabeled pool would be "
                       "empty: keep the training speakers' unlabeled clips, or add "
                       "--unlabeled_test_clips")
        for name in ("freq_mask_bands", "time_mask_frames", "num_freq_masks",
                     "num_time_masks"):
            if getattr(self, name) < 0:
                raise _bad(name, getattr(self, name), "must be >= 0")


ADVERSARIAL_LOSSES = ("hinge", "non_saturating")
TRANSLATED_NORMALIZERS = ("batch", "weight_sum")
CONSISTENCY_TEACHERS = ("current", "ema")
BANDWIDTH_RULE_NAMES = ("scott", "silverman", "median")
ANNEALING_SCHEDULE_NAMES = ("linear", "cosine", "step")
PROPAGATIONS = ("widest_path", "label_spreading", "self_training")
EDGE_STRENGTHS = ("min_endpoint", "midpoint")
KNN_METHODS = ("exact", "approximate")
SELECTIONS = ("top_fraction", "threshold")
STRATEGIES = ("default", "mirrored", "multi_worker")
TRAINING_LOOPS = ("auto", "fit", "custom")
LR_SCHEDULES = ("constant", "cosine")


def _check_bandwidth(name: str, value: str) -> None:
    """A bandwidth flag is a rule name or a positive number (a fixed width)."""
    if value in BANDWIDTH_RULE_NAMES:
        return
    try:
        width = float(value)
    except ValueError:
        width = -1.0
    if not width > 0:
        raise _bad(name, value, f"must be one of {', '.join(BANDWIDTH_RULE_NAMES)} "
                   "or a positive number")


def bandwidth_setting(value: str) -> str | float:
    """A validated bandwidth flag as the density ops take it: rule name or float."""
    return value if value in BANDWIDTH_RULE_NAMES else float(value)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the four networks (DESIGN.md "Networks")."""

    encoder_width: int = _field(32, "Channels of the face encoder's first conv block "
                                "(doubled per block, 3 blocks).")
    face_code_dim: int = _field(128, "Size of the face code h_f.")
    class_embedding_dim: int = _field(32, "Size of the generator's class embedding.")
    noise_dim: int = _field(32, "Size of the generator's noise z.")
    generator_width: int = _field(64, "Channels of the generator's last upsampling "
                                  "block (doubled towards its input, 3 blocks).")
    discriminator_width: int = _field(64, "Channels of the discriminator's first "
                                      "conv block (doubled per block, 3 blocks).")
    classifier_width: int = _field(32, "Channels of the classifier's first conv "
                                   "block (doubled per block, 3 blocks).")
    embedding_dim: int = _field(128, "Size of the classifier embedding phi.")
    dropout: float = _field(0.5, "Dropout before the classifier's linear head.")
    classifier_statistics: bool = _field(
        False, "Give phi the per-band mean and std over time of its input log-mel "
        "as well (the logistic-regression baseline's features), beside the "
        "pooled convolutional features.")

    def validate(self) -> None:
        for name in ("encoder_width", "face_code_dim", "class_embedding_dim",
                     "generator_width", "discriminator_width", "classifier_width",
                     "embedding_dim"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be >= 1")
        if self.noise_dim < 0:
            raise _bad("noise_dim", self.noise_dim, "must be >= 0")
        if not 0 <= self.dropout < 1:
            raise _bad("dropout", self.dropout, "must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The three objectives, the density weights and their annealing."""

    adversarial_loss: str = _field(
        "hinge", f"GAN loss of D and G: {', '.join(ADVERSARIAL_LOSSES)}.")
    r1_gamma: float = _field(0.0, "R1 penalty weight on D's real inputs (0 = off).")
    lambda_cls: float = _field(
        1.0, "Weight of the class-consistency CE(C(G(...)), y) in G's loss.")
    lambda_diversity: float = _field(
        0.0, "Weight of a mode-seeking term in G's loss (Mao et al. 2019): "
        "1 / (output distance / input distance) over pairs of faces of one class "
        "in the batch, so translations depend on the face and noise; 0 = off.")
    lambda_density: float = _field(
        0.0, "Weight of a density term in G's loss (needs use_density_weights): "
        "h_y^2 * max(0, l_y(tau) - log p_y(phi(G(face, y)))), how far each "
        "translation's KDE density under its class's labeled clips falls short of "
        "the least density the annealed gate admits, so G learns to land in its "
        "class's dense region (the gate's density rank rejected ~98 % of "
        "translations, docs/results/ANALYSIS.md section 14); only G and E "
        "learn from it; 0 = off.")
    lambda_t: float = _field(1.0, "Weight of the translated-sample term of C's loss.")
    lambda_u: float = _field(1.0, "Weight of the pseudo-labeled term of C's loss.")
    translated_normalizer: str = _field(
        "batch", "Denominator of the density-weighted translated term: 'batch' "
        "(the number of translated samples, as SSL practice normalises: a term "
        "whose samples are almost all rejected contributes almost nothing) or "
        "'weight_sum' (DESIGN.md's weighted mean: the term keeps full weight "
        "lambda_t even when every weight is ~1e-5; measured in "
        "docs/results/ANALYSIS.md).")
    unlabeled_normalizer: str = _field(
        "batch", "Denominator of the pseudo-labeled term: 'batch' (the number of "
        "unlabeled clips in the batch) or 'weight_sum' (the sum of their "
        "confidences: a few collected clips weigh as much as the labeled batch).")
    aux_rampup_epochs: int = _field(
        4, "Epochs after warm-up over which the weights of the auxiliary terms "
        "(translated, pseudo-labeled, consistency) ramp from ~0 to their lambda "
        "along exp(-5 (1 - t)^2) (Laine & Aila 2017); 0 = full weight at once.")
    label_smoothing: float = _field(
        0.0, "Label smoothing epsilon of C's labeled term (target (1 - eps) "
        "one_hot(y) + eps / C); 0 = off.")
    mixup_alpha: float = _field(
        0.0, "Mixup of C's labeled batch (Zhang et al. 2018): each labeled clip is "
        "mixed with a permuted partner by max(l, 1 - l), l ~ Beta(alpha, alpha), "
        "and scored against the mixed target; 0 = off.")
    use_translation_judge: bool = _field(
        True, "Admit a translated sample into C's loss only when a frozen "
        "snapshot of C taken at the end of warm-up (the judge, which neither C "
        "nor G can train) gives its intended class probability >= "
        "judge_threshold.")
    judge_threshold: float = _field(
        0.5, "Judge probability of the intended class a translated sample needs.")
    use_consistency: bool = _field(
        False, "FixMatch-style consistency on unlabeled clips: C's confident "
        "predictions on a weakly augmented view (crop only) are targets for a "
        "strongly augmented view (SpecAugment x2, time roll, optional gain).")
    lambda_c: float = _field(1.0, "Weight of the consistency term of C's loss.")
    consistency_threshold: float = _field(
        0.95, "Confidence C needs on the weak view for the clip to be a target.")
    consistency_teacher: str = _field(
        "current", "Who predicts the consistency targets on the weak view: "
        "'current' (C itself, FixMatch) or 'ema' (a mean teacher: an exponential "
        "moving average of C's weights with momentum teacher_momentum, updated "
        "every step; Tarvainen & Valpola 2017).")
    teacher_momentum: float = _field(0.99, "Momentum of the mean teacher's weights.")
    consistency_alignment: bool = _field(
        True, "Distribution alignment (ReMixMatch) of the consistency targets: "
        "scale C's weak-view probabilities by uniform / (running mean of them) "
        "before thresholding, so the targets cannot collapse onto the classes C "
        "already favours (without it, on EmoDB, two classes lost all recall).")
    strong_gain: float = _field(
        0.0, "Strong view: a per-clip offset drawn from [-g, g] added to the "
        "normalised log-mel (a gain change). 0 by default: loudness is an "
        "emotion cue (arousal), which a gain-invariant C would learn to ignore.")
    use_translation: bool = _field(
        True, "Train E, G, D and feed translated faces to C (off: no faces used).")
    use_density_weights: bool = _field(
        True, "Weight translated samples by KDE reliability and density rank "
        "(off: every translated sample has weight 1).")
    use_annealing: bool = _field(
        True, "Anneal the density threshold from 1 to tau_min (off: tau_min "
        "from the start).")
    density_bandwidth: str = _field(
        "scott", "KDE kernel width of the class banks: scott, silverman, median "
        "or a number.")
    min_reliability: float = _field(
        0.4, "rho: translated samples whose KDE class posterior is below this get "
        "weight 0.")
    weight_temperature: float = _field(
        0.1, "T in w = sigmoid((q - tau) / T).")
    tau_min: float = _field(0.2, "Final density-rank threshold of the annealing.")
    annealing_epochs: int = _field(
        0, "Epochs from tau = 1 to tau_min after warm-up (0: all remaining epochs).")
    annealing_schedule: str = _field(
        "linear", f"Annealing schedule: {', '.join(ANNEALING_SCHEDULE_NAMES)}.")

    def validate(self) -> None:
        _check_choice("adversarial_loss", self.adversarial_loss, ADVERSARIAL_LOSSES)
        for name in ("r1_gamma", "lambda_cls", "lambda_t", "lambda_u",
                     "annealing_epochs"):
            if getattr(self, name) < 0:
                raise _bad(name, getattr(self, name), "must be >= 0")
        _check_bandwidth("density_bandwidth", self.density_bandwidth)
        if not 0 <= self.min_reliability <= 1:
            raise _bad("min_reliability", self.min_reliability, "must be in [0, 1]")
        _check_choice("translated_normalizer", self.translated_normalizer,
                      TRANSLATED_NORMALIZERS)
        _check_choice("unlabeled_normalizer", self.unlabeled_normalizer,
                      TRANSLATED_NORMALIZERS)
        _check_choice("consistency_teacher", self.consistency_teacher,
                      CONSISTENCY_TEACHERS)
        if not 0 <= self.teacher_momentum < 1:
            raise _bad("teacher_momentum", self.teacher_momentum, "must be in [0, 1)")
        if not 0 <= self.label_smoothing < 1:
            raise _bad("label_smoothing", self.label_smoothing, "must be in [0, 1)")
        for name in ("aux_rampup_epochs", "lambda_c", "strong_gain", "mixup_alpha",
                     "lambda_diversity", "lambda_density"):
            if getattr(self, name) < 0:
                raise _bad(name, getattr(self, name), "must be >= 0")
        if self.lambda_density > 0 and not (self.use_translation
                                            and self.use_density_weights):
            raise _bad("lambda_density", self.lambda_density,
                       "needs use_translation and use_density_weights (its target "
                       "is the density gate's threshold)")
        for name in ("judge_threshold", "consistency_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise _bad(name, getattr(self, name), "must be in [0, 1]")
        if not self.weight_temperature > 0:
            raise _bad("weight_temperature", self.weight_temperature, "must be > 0")
        if not 0 <= self.tau_min <= 1:
            raise _bad("tau_min", self.tau_min, "must be in [0, 1]")
        _check_choice("annealing_schedule", self.annealing_schedule,
                      ANNEALING_SCHEDULE_NAMES)


@dataclasses.dataclass(frozen=True)
class GraphConfig:
    """High-density-path pseudo-labels of the unlabeled clips."""

    use_pseudo_labels: bool = _field(
        True, "Pseudo-label unlabeled clips on a kNN graph of phi embeddings.")
    propagation: str = _field(
        "widest_path", f"Label propagation: {', '.join(PROPAGATIONS)} "
        "(self_training: no graph, C's own predictions, the baseline a graph "
        "must beat).")
    knn_k: int = _field(10, "Neighbours per node of the kNN graph.")
    knn_method: str = _field(
        "exact", f"kNN graph search: {', '.join(KNN_METHODS)} (approximate: each "
        "clip is compared only with the clips of the knn_probes lists nearest to "
        "it, for graphs of 100k+ clips; see BUILD.md).")
    knn_list_size: int = _field(
        128, "Approximate kNN: smallest number of clips per list (lists hold "
        "knn_list_size to 2 x knn_list_size clips); must be > knn_k.")
    knn_probes: int = _field(
        10, "Approximate kNN: lists scanned per clip (its nearest list and the "
        "lists nearest to that one); more is slower and closer to exact.")
    knn_seed: int = _field(0, "Approximate kNN: seed of the list partition.")
    edge_strength: str = _field(
        "min_endpoint", f"Edge strength (widest path): {', '.join(EDGE_STRENGTHS)}.")
    graph_bandwidth: str = _field(
        "scott", "KDE kernel width for edge strengths: scott, silverman, median "
        "or a number. (On L2-normalised 128-d EmoDB embeddings 'median' is ~17x "
        "Scott's width and collapses widest-path pseudo-labels to 2 classes.)")
    spreading_alpha: float = _field(0.99, "Label spreading's alpha.")
    pseudo_label_selection: str = _field(
        "top_fraction", f"Which reached clips are collected: {', '.join(SELECTIONS)}.")
    pseudo_label_threshold: float = _field(
        0.0, "Minimum best-path strength (selection=threshold).")
    pseudo_label_top_fraction: float = _field(
        0.5, "Fraction of unlabeled clips collected per predicted class, most "
        "confident first (selection=top_fraction).")
    balance_pseudo_labels: bool = _field(
        True, "Scale collected clips' confidences by the inverse frequency of "
        "their pseudo-class, so every pseudo-class weighs the same in C's loss "
        "(widest-path labels pile into the densest classes; unbalanced, they "
        "drag C towards them and the UAR down).")
    pseudo_label_every: int = _field(
        2, "Refresh the pseudo-labels every this many epochs after warm-up.")
    pseudo_label_agreement: bool = _field(
        True, "Precision first: collect a clip only when its graph label and the "
        "classifier's own prediction agree.")
    normalize_embeddings: bool = _field(
        True, "L2-normalise phi embeddings before building the graph.")

    def validate(self) -> None:
        _check_choice("propagation", self.propagation, PROPAGATIONS)
        if self.knn_k < 1:
            raise _bad("knn_k", self.knn_k, "must be >= 1")
        _check_choice("knn_method", self.knn_method, KNN_METHODS)
        if self.knn_list_size < 2:
            raise _bad("knn_list_size", self.knn_list_size, "must be >= 2")
        if self.knn_method == "approximate" and self.knn_list_size <= self.knn_k:
            raise _bad("knn_list_size", self.knn_list_size,
                       f"must be > knn_k={self.knn_k} (one list must hold a clip's "
                       "neighbours)")
        if self.knn_probes < 1:
            raise _bad("knn_probes", self.knn_probes, "must be >= 1")
        _check_choice("edge_strength", self.edge_strength, EDGE_STRENGTHS)
        _check_bandwidth("graph_bandwidth", self.graph_bandwidth)
        if not 0 < self.spreading_alpha < 1:
            raise _bad("spreading_alpha", self.spreading_alpha, "must be in (0, 1)")
        _check_choice("pseudo_label_selection", self.pseudo_label_selection, SELECTIONS)
        if not 0 < self.pseudo_label_top_fraction <= 1:
            raise _bad("pseudo_label_top_fraction", self.pseudo_label_top_fraction,
                       "must be in (0, 1]")
        if self.pseudo_label_every < 1:
            raise _bad("pseudo_label_every", self.pseudo_label_every, "must be >= 1")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Schedule, optimizers, distribution and compilation."""

    epochs: int = _field(20, "Training epochs.")
    train_seed: int = _field(
        -1, "Seed of training's randomness (initial weights, dropout, "
        "augmentation, mixup, noise, the order of training batches); -1 = --seed. "
        "--seed alone also fixes the speaker split and the labeled subset, so "
        "another train_seed re-runs the same data with independent training "
        "noise (the study's 'supervised_reseeded' variant: the noise floor of a "
        "paired difference).")
    warmup_epochs: int = _field(
        4, "Epochs of C on labeled clips only (G/D adversarial only) before the "
        "full objective.")
    warmup_labeled_accuracy: float = _field(
        0.0, "0 = off: warm-up lasts --warmup_epochs. Otherwise warm-up lasts at "
        "least --warmup_epochs and ends after the first epoch whose labeled "
        "accuracy (C on its labeled training batches, the epoch's "
        "labeled_accuracy) reaches this value, or at --warmup_max_epochs: a C "
        "that has not yet fit its labeled clips neither collects pseudo-labels "
        "nor is snapshot as the judge. With more labels C needs more epochs to "
        "fit them (ANALYSIS.md section 18).")
    warmup_max_epochs: int = _field(
        0, "With --warmup_labeled_accuracy: the full objective starts at this "
        "epoch at the latest (0: --epochs minus --aux_rampup_epochs, at least one "
        "epoch before the end, so the auxiliary terms still reach full weight).")
    steps_per_epoch: int = _field(40, "Training steps per epoch.")
    classifier_lr: float = _field(1e-3, "AdamW learning rate of C.")
    weight_decay: float = _field(0.05, "AdamW weight decay of C.")
    lr_schedule: str = _field(
        "constant", "C's learning rate over training: 'constant', or 'cosine' "
        "(from classifier_lr down to 0 over epochs x steps_per_epoch, "
        "Loshchilov & Hutter 2017).")
    ema_momentum: float = _field(
        0.99, "Momentum of an exponential moving average of C's weights, kept by "
        "its optimizer; without a validation split the average is the classifier "
        "saved and evaluated (0 = off: the last step's weights).")
    generator_lr: float = _field(2e-4, "Adam learning rate of E and G.")
    discriminator_lr: float = _field(2e-4, "Adam learning rate of D.")
    gan_beta_1: float = _field(0.5, "Adam beta_1 of the G and D optimizers.")
    strategy: str = _field(
        "default", f"Distribution strategy: {', '.join(STRATEGIES)} (one replica per "
        "worker process or per GPU, the cluster read from the TF_CONFIG environment "
        "variable; tools/launch_local_cluster.py starts workers on one machine).")
    num_cpu_devices: int = _field(
        1, "Split the CPU into this many logical devices (to run 'mirrored' "
        "without GPUs).")
    replica_input_pipelines: bool = _field(
        False, "With --strategy=mirrored: one input pipeline per replica, each "
        "reading its own shard of the records (as each worker's pipeline does under "
        "multi_worker), instead of one pipeline whose batches go to the replicas in "
        "turn. A mirrored run then reads the batches of a multi-worker run with as "
        "many workers.")
    training_loop: str = _field(
        "auto", f"{', '.join(TRAINING_LOOPS)}: 'fit' is Keras' model.fit; 'custom' "
        "a loop of strategy.run(train_step) driving the same callbacks (what "
        "multi_worker needs: Keras 3 fit fails under MultiWorkerMirroredStrategy); "
        "'auto' is custom under multi_worker, else fit.")
    jit_compile: bool = _field(False, "XLA-compile the train step (default strategy only).")
    mixed_precision: bool = _field(False, "mixed_float16 compute (needs a GPU).")
    verbose: int = _field(-1, "Training progress on stdout: 0 silent, 1 a progress "
                          "bar and one short line per epoch, 2 the line only, -1 "
                          "1 on a terminal and 2 otherwise (logs, pipes).")

    @property
    def uses_custom_loop(self) -> bool:
        """Whether training runs `multi_worker.fit_with_loop` instead of fit."""
        return self.training_loop == "custom" or (
            self.training_loop == "auto" and self.strategy == "multi_worker")

    def validate(self) -> None:
        for name in ("epochs", "steps_per_epoch", "num_cpu_devices"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be >= 1")
        if self.train_seed < -1:
            raise _bad("train_seed", self.train_seed, "must be >= 0, or -1 for --seed")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise _bad("warmup_epochs", self.warmup_epochs,
                       f"must be in [0, epochs={self.epochs}]")
        if not 0 <= self.warmup_labeled_accuracy <= 1:
            raise _bad("warmup_labeled_accuracy", self.warmup_labeled_accuracy,
                       "must be in [0, 1] (0: off)")
        if self.warmup_labeled_accuracy > 0 and self.warmup_epochs < 1:
            raise _bad("warmup_labeled_accuracy", self.warmup_labeled_accuracy,
                       "needs --warmup_epochs >= 1 (the warm-up it may extend)")
        if self.warmup_max_epochs and not self.warmup_labeled_accuracy:
            raise _bad("warmup_max_epochs", self.warmup_max_epochs,
                       "only used with --warmup_labeled_accuracy > 0")
        if self.warmup_max_epochs and not (
                self.warmup_epochs <= self.warmup_max_epochs < self.epochs):
            raise _bad("warmup_max_epochs", self.warmup_max_epochs,
                       f"must be 0 or in [warmup_epochs={self.warmup_epochs}, "
                       f"epochs={self.epochs}) (the full objective must get an epoch)")
        for name in ("classifier_lr", "generator_lr", "discriminator_lr"):
            if not getattr(self, name) > 0:
                raise _bad(name, getattr(self, name), "must be > 0")
        if not 0 <= self.ema_momentum < 1:
            raise _bad("ema_momentum", self.ema_momentum, "must be in [0, 1)")
        if self.weight_decay < 0:
            raise _bad("weight_decay", self.weight_decay, "must be >= 0")
        if not 0 <= self.gan_beta_1 < 1:
            raise _bad("gan_beta_1", self.gan_beta_1, "must be in [0, 1)")
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.jit_compile and self.strategy == "mirrored":
            raise _bad("jit_compile", self.jit_compile,
                       "XLA under --strategy=mirrored fails on CPU logical devices "
                       "in TF 2.21; use --strategy=default or --nojit_compile")
        if self.jit_compile and self.strategy == "multi_worker":
            raise _bad("jit_compile", self.jit_compile,
                       "XLA has no cross-worker collectives on CPU in TF 2.21, so "
                       "--strategy=multi_worker cannot compile its step; use "
                       "--nojit_compile")
        _check_choice("training_loop", self.training_loop, TRAINING_LOOPS)
        if self.training_loop == "fit" and self.strategy == "multi_worker":
            raise _bad("training_loop", self.training_loop,
                       "Keras 3 fit fails under --strategy=multi_worker "
                       "(keras-team/keras#20585); use --training_loop=custom or auto")
        if self.jit_compile and self.training_loop == "custom":
            raise _bad("jit_compile", self.jit_compile,
                       "the custom training loop does not XLA-compile its step; "
                       "use --training_loop=fit")
        if self.replica_input_pipelines and self.strategy != "mirrored":
            raise _bad("replica_input_pipelines", self.replica_input_pipelines,
                       "only --strategy=mirrored feeds several replicas from one "
                       "process")
        if self.num_cpu_devices > 1 and self.strategy != "mirrored":
            raise _bad("num_cpu_devices", self.num_cpu_devices,
                       "logical CPU devices are only used by --strategy=mirrored")
        if self.verbose not in (-1, 0, 1, 2):
            raise _bad("verbose", self.verbose, "must be -1, 0, 1 or 2")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Deployment: --mode=export (SavedModel, TFLite) and --mode=predict."""

    export_dir: str = _field(
        "", "Where --mode=export writes: the SavedModel in TF Serving's layout "
        "<export_dir>/<model_name>/<version>/ and the TFLite models and "
        "export_report.json in <export_dir>/<model_name>_tflite/<version>/ "
        "(default <workdir>/export).")
    model_name: str = _field("image2audio", "The served model's name (TF Serving "
                             "base-path folder and the warm-up requests' model_spec).")
    export_version: int = _field(
        0, "Version folder to write (a positive integer that does not exist yet); "
        "0 = one more than the highest existing version.")
    tflite_variants: tuple = _field(
        TFLITE_VARIANTS, f"TFLite models to convert, any of {', '.join(TFLITE_VARIANTS)} "
        "(int8: int8 weights and activations, calibrated on training clips).")
    int8_frontend: str = _field(
        "float", "In the int8 TFLite model, keep the log-mel front end in float "
        "('float': only the classifier is quantized) or quantize it too ('int8'; "
        "its power spectrum spans too many decades for int8, measured in BUILD.md).")
    int8_weights: str = _field(
        "auto", "Int8 weight scales: per_channel (one per output channel), "
        "per_tensor (one per weight tensor: ~5 % fewer bytes, coarser weights), or "
        "auto: per_tensor when its predictions agree with the float model's on "
        ">= 97 % of the calibration (training) clips, else per_channel (measured in "
        "BUILD.md).")
    representative_clips: int = _field(
        1000, "Training clips (labeled, then unlabeled; at most this many) that "
        "calibrate the int8 model's activation ranges.")
    latency_runs: int = _field(
        50, "Timed runs per exported model (SavedModel and each TFLite model) for "
        "export_report.json's latency.")
    model: str = _field(
        "", "--mode=predict: a SavedModel version folder, a TF Serving base folder "
        "(its highest version is used) or a .tflite file (default: the highest "
        "version under <export_dir>/<model_name>).")

    def validate(self) -> None:
        if not self.model_name or "/" in self.model_name or self.model_name.startswith("."):
            raise _bad("model_name", self.model_name,
                       "must be a non-empty folder name without '/' or a leading '.'")
        if self.export_version < 0:
            raise _bad("export_version", self.export_version,
                       "must be a positive version, or 0 for the next free one")
        unknown = [v for v in self.tflite_variants if v not in TFLITE_VARIANTS]
        if unknown or len(set(self.tflite_variants)) != len(self.tflite_variants):
            raise _bad("tflite_variants", self.tflite_variants,
                       f"must be distinct values from {', '.join(TFLITE_VARIANTS)}")
        _check_choice("int8_frontend", self.int8_frontend, INT8_FRONTENDS)
        _check_choice("int8_weights", self.int8_weights, INT8_WEIGHTS)
        for name in ("representative_clips", "latency_runs"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be >= 1")


STUDY_VARIANTS = ("logreg", "supervised", "pl_label_spreading", "pl_widest_path",
                  "pl_self_training", "translation", "translation_density", "full",
                  "consistency", "consistency_ema", "full_consistency")
# Built-in, but not in the default grid: the noise floor (supervised-only with
# another --train_seed) is asked for by name.
OPTIONAL_STUDY_VARIANTS = ("supervised_reseeded",)


def _parse_numbers(name: str, values: tuple, kind, lower, upper=None) -> tuple:
    """Flag list entries as numbers of `kind` in [lower, upper]; a clear error
    naming the flag otherwise."""
    parsed = []
    for value in values:
        try:
            number = kind(str(value).strip())
        except ValueError:
            raise _bad(name, values, f"'{value}' is not a{'n integer' if kind is int else ' number'}")
        if number < lower or (upper is not None and number > upper):
            bound = f"[{lower}, {upper}]" if upper is not None else f">= {lower}"
            raise _bad(name, values, f"'{value}' must be {bound}")
        parsed.append(number)
    if len(set(parsed)) != len(parsed):
        raise _bad(name, values, "values must be distinct")
    return tuple(parsed)


def parse_variant_definitions(text: str) -> dict[str, tuple[str, ...]]:
    """`--study_variant_flags`: 'name:--flag --flag=value;name2:...' -> {name:
    flags}. Names are [a-z0-9_]; every flag starts with '--'."""
    variants: dict[str, tuple[str, ...]] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        name, sep, flags = entry.partition(":")
        name = name.strip()
        if not sep or not name or not all(c.isalnum() or c == "_" for c in name):
            raise _bad("study_variant_flags", text,
                       f"entry '{entry}' is not of the form name:--flag --flag=value")
        tokens = tuple(flags.split())
        bad = [t for t in tokens if not t.startswith("--")]
        if bad:
            raise _bad("study_variant_flags", text,
                       f"variant '{name}': '{bad[0]}' is not a --flag")
        if name in variants:
            raise _bad("study_variant_flags", text, f"variant '{name}' defined twice")
        variants[name] = tokens
    return variants


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """--mode=study: a grid of folds x seeds x label budgets x variants."""

    study_dir: str = _field(
        "", "Where the study writes its cells, results and report (default "
        "<workdir>/study).")
    study_folds: tuple = _field(
        ("0", "1", "2", "3", "4"), "Test-speaker folds (of --num_folds) of the grid.")
    study_seeds: tuple = _field(("0", "1", "2"), "Seeds of the grid (labeled subset, "
                                "initialisation, input order).")
    study_budgets: tuple = _field(
        ("0.1",), "Label budgets of the grid: fractions of the training clips "
        "labeled (--label_fraction), in (0, 1].")
    study_variants: tuple = _field(
        STUDY_VARIANTS, "Variants of the grid: built-in ones ("
        + ", ".join(STUDY_VARIANTS + OPTIONAL_STUDY_VARIANTS)
        + ") or names defined by --study_variant_flags. "
        "'supervised' is the baseline every paired difference is taken against.")
    study_variant_flags: str = _field(
        "", "Extra variants: 'name:--flag --flag=value;name2:--flag ...' (a "
        "built-in name redefines that variant).")
    study_train_seeds: int = _field(
        0, "Training runs per cell, each with its own --train_seed derived from "
        "(fold, seed, run), the same for every variant of that (fold, seed) and "
        "different between them, so the paired differences are independent "
        "draws; results average a (fold, seed)'s runs, so the paired interval "
        "over those independent pairs includes the training-seed spread. 0: one "
        "run whose training seed is --seed (the studies committed before this "
        "flag).")
    study_metric: str = _field(
        "uar", "What the study's tables compare: 'uar' (the test speakers') or "
        "'val_uar' (the validation speakers' UAR at the last epoch; needs "
        "--val_speaker_fraction or --val_speakers): for development, so that "
        "choices are made without the test speakers.")
    study_quick: bool = _field(
        False, "A quick look: the first fold and seed, budget 0.1, variants "
        "logreg, supervised and full.")
    study_report_only: bool = _field(
        False, "Do not train: rebuild results and report from the finished cells.")
    study_workers: int = _field(
        1, "Cells trained at once, each in its own process. A cell's numbers do "
        "not depend on it (deterministic ops); on 2 cores, 2 workers finish a "
        "study sooner (measured in BUILD.md).")

    @property
    def folds(self) -> tuple[int, ...]:
        return _parse_numbers("study_folds", self.study_folds, int, 0)

    @property
    def seeds(self) -> tuple[int, ...]:
        return _parse_numbers("study_seeds", self.study_seeds, int, 0)

    @property
    def budgets(self) -> tuple[float, ...]:
        budgets = _parse_numbers("study_budgets", self.study_budgets, float, 0.0, 1.0)
        if 0.0 in budgets:
            raise _bad("study_budgets", self.study_budgets, "a budget must be > 0")
        return budgets

    def validate(self) -> None:
        for name in ("study_folds", "study_seeds", "study_budgets", "study_variants"):
            if not getattr(self, name):
                raise _bad(name, getattr(self, name), "the grid needs at least one value")
        self.folds, self.seeds, self.budgets  # noqa: B018 (parses and checks)
        defined = parse_variant_definitions(self.study_variant_flags)
        known = set(STUDY_VARIANTS) | set(OPTIONAL_STUDY_VARIANTS) | set(defined)
        unknown = [v for v in self.study_variants if v not in known]
        if unknown:
            raise _bad("study_variants", self.study_variants,
                       f"unknown variant '{unknown[0]}'; choose from "
                       f"{', '.join(sorted(known))} or define it with "
                       "--study_variant_flags")
        if len(set(self.study_variants)) != len(self.study_variants):
            raise _bad("study_variants", self.study_variants, "variants must be distinct")
        if self.study_workers < 1:
            raise _bad("study_workers", self.study_workers, "must be >= 1")
        _check_choice("study_metric", self.study_metric, ("uar", "val_uar"))
        if self.study_train_seeds < 0:
            raise _bad("study_train_seeds", self.study_train_seeds,
                       "must be >= 0 (0: one run per cell, training seed --seed)")
        if self.study_train_seeds:
            for name, flags in defined.items():
                if name in self.study_variants and any(
                        f.startswith("--train_seed") for f in flags):
                    raise _bad("study_variant_flags", self.study_variant_flags,
                               f"variant '{name}' sets --train_seed, which "
                               "--study_train_seeds sets per run")
            if "supervised_reseeded" in self.study_variants and (
                    "supervised_reseeded" not in defined):
                raise _bad("study_variants", self.study_variants,
                           "'supervised_reseeded' fixes one --train_seed for every "
                           "cell, which --study_train_seeds sets per run; with "
                           "--study_train_seeds >= 2 the noise floor comes from "
                           "supervised's own runs")


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole run: where it writes and every sub-config."""

    workdir: str = _field("runs/demo", "Folder that holds everything a run writes.")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    frontend: FrontEndConfig = dataclasses.field(default_factory=FrontEndConfig)
    input: InputConfig = dataclasses.field(default_factory=InputConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    graph: GraphConfig = dataclasses.field(default_factory=GraphConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    study: StudyConfig = dataclasses.field(default_factory=StudyConfig)

    def validate(self) -> "Config":
        if not self.workdir:
            raise _bad("workdir", self.workdir, "must not be empty")
        self.data.validate()
        self.frontend.validate()
        self.input.validate()
        self.model.validate()
        self.loss.validate()
        self.graph.validate()
        self.train.validate()
        self.export.validate()
        self.study.validate()
        self._check_consistency_reachable()
        if self.study.study_train_seeds and self.train.train_seed >= 0:
            raise _bad("train_seed", self.train.train_seed,
                       f"--study_train_seeds={self.study.study_train_seeds} sets "
                       "each run's training seed; leave --train_seed at -1")
        if (self.study.study_metric == "val_uar" and not self.data.val_speakers
                and self.data.val_speaker_fraction == 0):
            raise _bad("study_metric", self.study.study_metric,
                       "needs validation speakers: set --val_speaker_fraction "
                       "(or --val_speakers)")
        return self

    def _check_consistency_reachable(self) -> None:
        """Label smoothing eps holds C's confidence near 1 - eps + eps / C (its
        minimiser on the labeled clips), so a consistency threshold at or above
        that value admits almost no target: consistency would be on in name
        only (measured: smoothing 0.1 over 5 classes, threshold 0.95, ~no
        targets)."""
        loss, classes = self.loss, self.data.classes
        if not (loss.use_consistency and loss.label_smoothing > 0 and classes):
            return
        cap = 1 - loss.label_smoothing + loss.label_smoothing / len(classes)
        if loss.consistency_threshold >= cap:
            raise _bad("consistency_threshold", loss.consistency_threshold,
                       f"must be below {cap:.3f} = 1 - label_smoothing + "
                       f"label_smoothing / {len(classes)} classes, the confidence "
                       f"--label_smoothing={loss.label_smoothing} holds C near; at "
                       "or above it --use_consistency gets almost no target "
                       "(lower the threshold, or set --label_smoothing=0)")

    @property
    def training_seed(self) -> int:
        """The seed of training's randomness: --train_seed, else --seed."""
        return self.train.train_seed if self.train.train_seed >= 0 else self.data.seed

    @property
    def data_dir(self) -> str:
        """Where prepare writes the TFRecords, dataset.json and skipped.json."""
        return os.path.join(self.workdir, "data")

    @property
    def classifier_path(self) -> str:
        """The trained classifier C (Keras format) that evaluate and export read."""
        return os.path.join(self.workdir, "classifier.keras")

    @property
    def study_dir(self) -> str:
        """Where --mode=study writes its cells, results and report."""
        return self.study.study_dir or os.path.join(self.workdir, "study")

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.workdir, "metrics.json")

    @property
    def saved_model_base(self) -> str:
        """TF Serving's base path: one integer-named folder per exported version."""
        return os.path.join(self.export.export_dir or os.path.join(self.workdir, "export"),
                            self.export.model_name)

    @property
    def tflite_base(self) -> str:
        """The TFLite models and export_report.json, one folder per version."""
        return self.saved_model_base + "_tflite"


_SUB_CONFIGS = {"data": DataConfig, "frontend": FrontEndConfig, "input": InputConfig,
                "model": ModelConfig, "loss": LossConfig, "graph": GraphConfig,
                "train": TrainConfig, "export": ExportConfig, "study": StudyConfig}


def leaf_fields() -> list[tuple[str | None, dataclasses.Field]]:
    """(section or None, field) for every flag-backed field of `Config`."""
    leaves: list[tuple[str | None, dataclasses.Field]] = []
    for f in dataclasses.fields(Config):
        if f.name in _SUB_CONFIGS:
            leaves.extend((f.name, g) for g in dataclasses.fields(_SUB_CONFIGS[f.name]))
        else:
            leaves.append((None, f))
    names = [f.name for _, f in leaves]
    assert len(names) == len(set(names)), "config field names must be unique"
    return leaves


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()


def config_from_flat(values: Mapping[str, Any]) -> Config:
    """Builds and validates a `Config` from flat {flag name: value}.

    Unknown names raise; missing names take the defaults. Lists become tuples so
    the tree stays hashable and frozen.
    """
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SUB_CONFIGS}
    top: dict[str, Any] = {}
    known = {f.name: section for section, f in leaf_fields()}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"--{name}: not a configuration flag")
        if isinstance(value, list):
            value = tuple(value)
        section = known[name]
        (top if section is None else sections[section])[name] = value
    config = Config(
        **top, **{name: cls(**sections[name]) for name, cls in _SUB_CONFIGS.items()})
    return config.validate()


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(tree: Mapping[str, Any]) -> Config:
    """Inverse of `config_to_dict` (e.g. for a saved `config.json`)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if key in _SUB_CONFIGS:
            flat.update(value)
        else:
            flat[key] = value
    return config_from_flat(flat)


def check_trained_frontend(config: Config) -> None:
    """Raises if a front-end flag differs from what `<workdir>/config.json`
    recorded for the run that trained the classifier (e.g. --pad_mode, which
    dataset.json does not hold): evaluation and export must feed the classifier
    what it was trained on."""
    path = os.path.join(config.workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        trained = json.load(f).get("frontend", {})
    if not trained:
        return
    defaults = dataclasses.asdict(FrontEndConfig())
    for name, value in dataclasses.asdict(config.frontend).items():
        # A flag newer than the run's config.json: the run had its default.
        recorded = trained.get(name, defaults[name])
        if recorded != value:
            raise _bad(name, value, f"the classifier in {config.workdir} was trained "
                       f"with {name}={recorded} ({path}); use that value")


def write_config(config: Config, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config_to_dict(config), f, indent=2, sort_keys=True)
        f.write("\n")
