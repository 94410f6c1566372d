"""Corpus scanners: each parses one corpus's own file-naming convention.

A scanner walks its folder and returns every file as either an item (path, the
corpus's own label name, speaker or subject, utterance id) or a skipped entry
with the reason, so nothing is silently lost. Decoding happens later, in
`prepare`, which also reports files that fail to decode.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Callable

import numpy as np

from i2a_tf.config import ConfigError
from i2a_tf.data.audio_files import AUDIO_EXTENSIONS
from i2a_tf.data.face_images import IMAGE_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class SpeechItem:
    path: str
    label: str  # the corpus's own label name, before the label map
    speaker: str
    utterance_id: str


@dataclasses.dataclass
class FaceItem:
    source: str  # a file path, or "<csv path>:<row>" for CSV corpora
    label: str
    subject: str
    pixels: np.ndarray | None = None  # set for CSV corpora, else read from source


@dataclasses.dataclass
class Scan:
    """What a scanner found: usable items and skipped {"path", "reason"} entries."""

    items: list
    skipped: list[dict[str, str]]


def _walk(root: str, skipped: list[dict[str, str]]) -> list[str]:
    """Every file below root, sorted, so scans do not depend on the file system.

    Symlinked folders are followed (corpora are often linked in); a folder that
    cannot be listed is reported in `skipped` rather than silently left out.
    """
    found = []

    def unreadable(error: OSError) -> None:
        skipped.append({"path": error.filename or root,
                        "reason": f"unreadable folder: {error.strerror or error}"})

    for folder, dirs, files in os.walk(root, onerror=unreadable, followlinks=True):
        dirs.sort()
        found.extend(os.path.join(folder, name) for name in sorted(files))
    return found


def _scan_files(root: str, extensions: tuple[str, ...], kind: str,
                parse: Callable[[str], object]) -> Scan:
    """Applies `parse(path)` (an item, or a reason string) to every file below root."""
    scan = Scan([], [])
    for path in _walk(root, scan.skipped):
        if not path.lower().endswith(extensions):
            scan.skipped.append({"path": path, "reason": f"not {kind} file: "
                                 f"extension '{os.path.splitext(path)[1]}'"})
            continue
        parsed = parse(path)
        if isinstance(parsed, str):
            scan.skipped.append({"path": path, "reason": parsed})
        else:
            scan.items.append(parsed)
    return scan


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


# ---------------------------------------------------------------- speech corpora

EMODB_EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear",
                  "F": "happiness", "T": "sadness", "N": "neutral"}
_EMODB_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z]?)$")


def _parse_emodb(path: str):
    stem = _stem(path)
    match = _EMODB_NAME.match(stem)
    if not match:
        return "bad file name: does not follow the EmoDB convention SSTTTEv (e.g. 03a01Fa.wav)"
    speaker, _, emotion, _ = match.groups()
    if emotion not in EMODB_EMOTIONS:
        return f"unknown label: EmoDB emotion letter '{emotion}'"
    return SpeechItem(path, EMODB_EMOTIONS[emotion], speaker, stem)


RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad",
                    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def _parse_ravdess(path: str):
    stem = _stem(path)
    match = _RAVDESS_NAME.match(stem)
    if not match:
        return ("bad file name: does not follow the RAVDESS convention "
                "MM-VV-EE-II-SS-RR-AA (e.g. 03-01-05-01-02-01-12.wav)")
    emotion, actor = match.group(3), match.group(7)
    if emotion not in RAVDESS_EMOTIONS:
        return f"unknown label: RAVDESS emotion code '{emotion}'"
    return SpeechItem(path, RAVDESS_EMOTIONS[emotion], actor, stem)


CREMAD_EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear",
                   "HAP": "happiness", "NEU": "neutral", "SAD": "sadness"}
_CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def _parse_cremad(path: str):
    stem = _stem(path)
    match = _CREMAD_NAME.match(stem)
    if not match:
        return ("bad file name: does not follow the CREMA-D convention "
                "AAAA_SSS_EEE_LL (e.g. 1001_DFA_ANG_XX.wav)")
    actor, _, emotion, _ = match.groups()
    if emotion not in CREMAD_EMOTIONS:
        return f"unknown label: CREMA-D emotion code '{emotion}'"
    return SpeechItem(path, CREMAD_EMOTIONS[emotion], actor, stem)


TESS_EMOTIONS = {"angry": "angry", "disgust": "disgust", "fear": "fear",
                 "happy": "happy", "neutral": "neutral", "ps": "pleasant_surprise",
                 "sad": "sad"}


def _parse_tess(path: str):
    stem = _stem(path)
    parts = stem.split("_")
    if len(parts) < 3 or parts[0].upper() not in ("OAF", "YAF"):
        return ("bad file name: does not follow the TESS convention "
                "SPK_word_emotion with SPK in OAF/YAF (e.g. OAF_back_angry.wav)")
    emotion = parts[-1].lower()
    if emotion not in TESS_EMOTIONS:
        return f"unknown label: TESS emotion '{parts[-1]}'"
    return SpeechItem(path, TESS_EMOTIONS[emotion], parts[0].upper(), stem)


def _class_folder_parts(root: str, path: str, min_depth: int = 2):
    """(class folder, owner prefix of the file name) for root/.../<class>/<file>."""
    relative = os.path.relpath(path, root).split(os.sep)
    if len(relative) < min_depth:
        return None
    return relative[-2], _stem(path).split("_")[0]


def scan_speech(corpus: str, root: str) -> Scan:
    """Scans a speech corpus folder laid out as `corpus` (see config.SPEECH_CORPORA).

    'folder' (and the generated 'synthetic' corpus) is the generic layout
    `<root>/<class>/<speaker>_<anything>.<ext>`: the class is the folder name and
    the speaker the file-name prefix before the first underscore.
    """
    parsers = {"emodb": _parse_emodb, "ravdess": _parse_ravdess,
               "cremad": _parse_cremad, "tess": _parse_tess}
    if corpus in parsers:
        return _scan_files(root, AUDIO_EXTENSIONS, "an audio", parsers[corpus])
    if corpus in ("folder", "synthetic"):
        def parse_folder(path):
            parts = _class_folder_parts(root, path)
            if parts is None:
                return "not inside a class folder: expected <root>/<class>/<speaker>_<name>"
            label, speaker = parts
            relative = os.path.splitext(os.path.relpath(path, root))[0]
            return SpeechItem(path, label, speaker, relative.replace(os.sep, "/"))
        return _scan_files(root, AUDIO_EXTENSIONS, "an audio", parse_folder)
    raise ValueError(f"--speech_corpus={corpus}: unknown speech corpus")


# ------------------------------------------------------------------ face corpora

FER2013_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
JAFFE_EMOTIONS = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness",
                  "NE": "neutral", "SA": "sadness", "SU": "surprise"}


def _parse_jaffe(path: str):
    parts = os.path.basename(path).split(".")
    if len(parts) < 3 or len(parts[1]) < 2:
        return ("bad file name: does not follow the JAFFE convention "
                "SS.EEn.id.tiff (e.g. KA.AN1.39.tiff)")
    code = parts[1][:2].upper()
    if code not in JAFFE_EMOTIONS:
        return f"unknown label: JAFFE emotion code '{parts[1]}'"
    return FaceItem(path, JAFFE_EMOTIONS[code], parts[0])


def _scan_fer2013_csv(path: str) -> Scan:
    """Kaggle fer2013.csv: columns emotion (0-6), pixels (48*48 ints), Usage."""
    scan = Scan([], [])
    # Line by line, each line parsed on its own: a stray quote or a bad byte
    # then spoils one row, not the rest of the file.
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        header = next(csv.reader([handle.readline()]), [])
        columns = {name.strip(): i for i, name in enumerate(header)}
        missing = {"emotion", "pixels"} - set(columns)
        if missing:
            raise ConfigError(f"--face_dir={path}: not a FER2013 CSV, missing "
                              f"column(s) {', '.join(sorted(missing))}")
        for row_number, line in enumerate(handle, start=2):  # 1 is the header
            source = f"{path}:{row_number}"
            if not line.strip():
                continue
            try:
                row = next(csv.reader([line]))
                emotion = int(row[columns["emotion"]])
                pixels = np.array(row[columns["pixels"]].split(), dtype=np.int64)
            except (csv.Error, IndexError, TypeError, ValueError, OverflowError):
                scan.skipped.append({"path": source, "reason":
                                     "bad CSV row: emotion or pixels not integers"})
                continue
            if not 0 <= emotion < len(FER2013_EMOTIONS):
                scan.skipped.append({"path": source,
                                     "reason": f"unknown label: FER2013 emotion {emotion}"})
                continue
            side = int(round(np.sqrt(pixels.size)))
            if pixels.size == 0 or side * side != pixels.size or \
                    pixels.min() < 0 or pixels.max() > 255:
                scan.skipped.append({"path": source, "reason":
                                     f"bad CSV row: {pixels.size} pixels, expected a "
                                     "square image of values 0-255"})
                continue
            scan.items.append(FaceItem(source, FER2013_EMOTIONS[emotion], "",
                                       pixels.reshape(side, side).astype(np.uint8)))
    return scan


def _fer2013_csv_path(root: str) -> str | None:
    if os.path.isfile(root) and root.lower().endswith(".csv"):
        return root
    candidate = os.path.join(root, "fer2013.csv")
    return candidate if os.path.isfile(candidate) else None


def scan_faces(corpus: str, root: str) -> Scan:
    """Scans a face corpus laid out as `corpus` (see config.FACE_CORPORA).

    'ckplus', 'folder' and 'synthetic': `<root>/<class>/<subject>_<anything>.<ext>`
    (CK+48's `S010_004_00000017.png` gives subject S010). 'fer2013': the Kaggle CSV
    (a file, or a folder holding fer2013.csv), else `<root>/{train,test}/<class>/`
    folders. 'jaffe': `SS.EEn.id.tiff` files anywhere below root.
    """
    if corpus == "jaffe":
        return _scan_files(root, IMAGE_EXTENSIONS, "an image", _parse_jaffe)
    if corpus == "fer2013":
        csv_path = _fer2013_csv_path(root)
        if csv_path is not None:
            return _scan_fer2013_csv(csv_path)
    if corpus in ("ckplus", "folder", "synthetic", "fer2013"):
        subject_from_name = corpus != "fer2013"  # FER2013 has no subject ids

        def parse_folder(path):
            parts = _class_folder_parts(root, path)
            if parts is None:
                return "not inside a class folder: expected <root>/<class>/<file>"
            label, subject = parts
            return FaceItem(path, label, subject if subject_from_name else "")
        return _scan_files(root, IMAGE_EXTENSIONS, "an image", parse_folder)
    raise ValueError(f"--face_corpus={corpus}: unknown face corpus")
