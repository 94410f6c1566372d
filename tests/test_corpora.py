"""Corpus scanners and decoders on small fabricated files that follow each
corpus's naming convention, including the awkward ones (stereo 48 kHz, corrupt
and empty files, palette-mode TIFF, bad CSV rows)."""

import os

import numpy as np
import pytest
from PIL import Image

from conftest import tone, write_png, write_wav
from i2a_tf.config import ConfigError
from i2a_tf.data import corpora
from i2a_tf.data.audio_files import AudioReadError, read_waveform
from i2a_tf.data.face_images import ImageReadError, read_face_image
from i2a_tf.data.label_map import LabelMap


def _by_name(scan):
    return {os.path.basename(getattr(i, "path", None) or i.source): i for i in scan.items}


def _reasons(scan):
    return {os.path.basename(s["path"]): s["reason"] for s in scan.skipped}


def test_emodb_names(tmp_path):
    for name in ("03a01Fa.wav", "08b10Wc.wav", "16a05La.wav", "03a01Xa.wav", "foo.wav"):
        write_wav(str(tmp_path / name), tone(0.6))
    (tmp_path / "notes.txt").write_text("not audio")
    scan = corpora.scan_speech("emodb", str(tmp_path))
    items = _by_name(scan)
    assert (items["03a01Fa.wav"].label, items["03a01Fa.wav"].speaker) == ("happiness", "03")
    assert (items["08b10Wc.wav"].label, items["08b10Wc.wav"].speaker) == ("anger", "08")
    assert items["16a05La.wav"].label == "boredom"
    reasons = _reasons(scan)
    assert "emotion letter 'X'" in reasons["03a01Xa.wav"]
    assert "EmoDB convention" in reasons["foo.wav"]
    assert "not an audio file" in reasons["notes.txt"]


def test_ravdess_names_and_stereo_48k(tmp_path):
    stereo = write_wav(str(tmp_path / "Actor_12" / "03-01-05-01-02-01-12.wav"),
                       tone(0.5, rate=48000, channels=2), rate=48000)
    write_wav(str(tmp_path / "Actor_01" / "03-01-02-01-01-01-01.wav"), tone(0.5))
    write_wav(str(tmp_path / "Actor_01" / "03-01-09-01-01-01-01.wav"), tone(0.5))
    scan = corpora.scan_speech("ravdess", str(tmp_path))
    items = _by_name(scan)
    assert (items["03-01-05-01-02-01-12.wav"].label,
            items["03-01-05-01-02-01-12.wav"].speaker) == ("angry", "12")
    assert items["03-01-02-01-01-01-01.wav"].label == "calm"
    assert "emotion code '09'" in _reasons(scan)["03-01-09-01-01-01-01.wav"]
    waveform = read_waveform(stereo, 16000)
    assert waveform.dtype == np.int16 and waveform.ndim == 1
    assert abs(len(waveform) - 8000) <= 1  # 0.5 s at 16 kHz


def test_cremad_and_tess_names(tmp_path):
    for name in ("1001_DFA_ANG_XX.wav", "1091_IEO_SAD_HI.wav", "1001_DFA_BAD_XX.wav",
                 "OAF_back_angry.wav", "YAF_dog_ps.wav", "XYZ_dog_sad.wav"):
        write_wav(str(tmp_path / name), tone(0.6))
    crema = corpora.scan_speech("cremad", str(tmp_path))
    items = _by_name(crema)
    assert (items["1001_DFA_ANG_XX.wav"].label, items["1001_DFA_ANG_XX.wav"].speaker) \
        == ("anger", "1001")
    assert items["1091_IEO_SAD_HI.wav"].label == "sadness"
    assert "emotion code 'BAD'" in _reasons(crema)["1001_DFA_BAD_XX.wav"]
    tess = corpora.scan_speech("tess", str(tmp_path))
    items = _by_name(tess)
    assert (items["OAF_back_angry.wav"].label, items["OAF_back_angry.wav"].speaker) \
        == ("angry", "OAF")
    assert items["YAF_dog_ps.wav"].label == "pleasant_surprise"
    assert "TESS convention" in _reasons(tess)["XYZ_dog_sad.wav"]


def test_generic_speech_folder(tmp_path):
    write_wav(str(tmp_path / "anger" / "spk1_a.wav"), tone(0.6))
    write_wav(str(tmp_path / "loose.wav"), tone(0.6))
    scan = corpora.scan_speech("folder", str(tmp_path))
    [item] = scan.items
    assert (item.label, item.speaker, item.utterance_id) == ("anger", "spk1", "anger/spk1_a")
    assert "class folder" in _reasons(scan)["loose.wav"]


def test_audio_decoding_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x01garbage" * 10)
    with pytest.raises(AudioReadError, match="empty file"):
        read_waveform(str(empty))
    with pytest.raises(AudioReadError, match="unreadable"):
        read_waveform(str(corrupt))
    with pytest.raises(AudioReadError, match="unreadable"):
        read_waveform(str(tmp_path / "missing.wav"))


def test_flac_and_resampling(tmp_path):
    path = str(tmp_path / "x.flac")
    write_wav(path, tone(1.0, rate=22050), rate=22050)
    waveform = read_waveform(path, 16000)
    assert len(waveform) == 16000
    original = (tone(1.0, rate=22050) * 32768).round().clip(-32768, 32767)
    # Resampling keeps the level (RMS) of a band-limited tone.
    assert np.isclose(waveform.astype(float).std(), original.std(), rtol=0.02)


def test_ckplus_and_generic_faces(tmp_path):
    write_png(str(tmp_path / "happy" / "S010_004_00000017.png"), 100)
    write_png(str(tmp_path / "contempt" / "S011_001_00000001.png"), 100)
    scan = corpora.scan_faces("ckplus", str(tmp_path))
    items = _by_name(scan)
    assert (items["S010_004_00000017.png"].label,
            items["S010_004_00000017.png"].subject) == ("happy", "S010")
    assert items["S011_001_00000001.png"].label == "contempt"


def test_fer2013_csv_with_bad_rows(tmp_path):
    good = " ".join(["7"] * (48 * 48))
    rows = ["emotion,pixels,Usage",
            f"3,{good},Training",
            f"0,{good},PublicTest",
            "x,1 2 3,Training",                      # emotion not an integer
            f"9,{good},Training",                    # emotion outside 0-6
            f"1,{' '.join(['300'] * (48 * 48))},Training",  # pixel out of range
            "2,1 2 3,Training"]                      # not a square image
    csv_path = tmp_path / "fer2013.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    scan = corpora.scan_faces("fer2013", str(tmp_path))  # the folder holding the CSV
    assert [i.label for i in scan.items] == ["happy", "angry"]
    assert scan.items[0].pixels.shape == (48, 48)
    reasons = {s["path"].rsplit(":", 1)[1]: s["reason"] for s in scan.skipped}
    assert set(reasons) == {"4", "5", "6", "7"}
    assert "bad CSV row" in reasons["4"] and "FER2013 emotion 9" in reasons["5"]
    assert "bad CSV row" in reasons["6"] and "bad CSV row" in reasons["7"]
    assert len(corpora.scan_faces("fer2013", str(csv_path)).items) == 2


def test_fer2013_csv_survives_stray_quotes_bom_and_bad_bytes(tmp_path):
    good = " ".join(["7"] * 16)
    content = ("\ufeffemotion,pixels,Usage\n"
               f'3,"{good},Training\n'          # stray quote: spoils this row only
               f"4,{good},Training\n").encode("utf-8")
    content += b"2,\xff\xfe 1 2,Training\n" + f"0,{good},PrivateTest\n".encode()
    (tmp_path / "fer2013.csv").write_bytes(content)
    scan = corpora.scan_faces("fer2013", str(tmp_path))
    assert [i.label for i in scan.items] == ["sad", "angry"]
    reasons = {s["path"].rsplit(":", 1)[1]: s["reason"] for s in scan.skipped}
    assert sorted(reasons) == ["2", "4"]


def test_symlinked_class_folders_are_followed(tmp_path):
    real = tmp_path / "elsewhere" / "anger"
    write_wav(str(real / "spk1_a.wav"), tone(0.6))
    (tmp_path / "corpus").mkdir()
    os.symlink(real, tmp_path / "corpus" / "anger")
    scan = corpora.scan_speech("folder", str(tmp_path / "corpus"))
    assert [i.label for i in scan.items] == ["anger"]
    other = tmp_path / "other.csv"
    other.write_text("label,image\n1,2\n")
    with pytest.raises(ConfigError, match=r"--face_dir=.*other.csv: not a FER2013 CSV"):
        corpora.scan_faces("fer2013", str(other))


def test_fer2013_folders(tmp_path):
    write_png(str(tmp_path / "train" / "sad" / "im0.png"), 10)
    write_png(str(tmp_path / "test" / "fear" / "im1.jpg"), 10, mode="RGB")
    scan = corpora.scan_faces("fer2013", str(tmp_path))
    assert sorted(i.label for i in scan.items) == ["fear", "sad"]
    assert all(i.subject == "" for i in scan.items)


def test_jaffe_palette_tiff_and_corrupt_image(tmp_path):
    # A palette whose indices are NOT the grey levels: index i shows grey 255 - i.
    indices = np.zeros((256, 256), np.uint8)
    indices[:, 128:] = 10
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    palette.save(tmp_path / "KA.AN1.39.tiff")
    with Image.open(tmp_path / "KA.AN1.39.tiff") as reopened:
        assert reopened.mode == "P"
    pixels = (np.arange(256 * 256) % 251).reshape(256, 256).astype(np.uint8)
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "KM.HA2.40.tiff")
    (tmp_path / "KL.SA1.41.tiff").write_bytes(b"II*\x00not a tiff")
    write_png(str(tmp_path / "KA.XX1.1.png"), 5)
    scan = corpora.scan_faces("jaffe", str(tmp_path))
    items = _by_name(scan)
    assert (items["KA.AN1.39.tiff"].label, items["KA.AN1.39.tiff"].subject) == ("anger", "KA")
    assert items["KM.HA2.40.tiff"].label == "happiness"
    assert "JAFFE emotion code 'XX1'" in _reasons(scan)["KA.XX1.1.png"]
    image = read_face_image(str(tmp_path / "KA.AN1.39.tiff"), 48)
    assert image.shape == (48, 48) and image.dtype == np.uint8
    # Grey levels through the palette, not the raw indices 0 and 10.
    assert image[:, :20].min() == 255 and image[:, 28:].max() == 245
    with pytest.raises(ImageReadError, match="undecodable"):
        read_face_image(str(tmp_path / "KL.SA1.41.tiff"), 48)


def test_non_square_image_is_centre_cropped(tmp_path):
    pixels = np.zeros((40, 80), np.uint8)
    pixels[:, 20:60] = 200  # the centre square is uniformly bright
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = read_face_image(str(tmp_path / "wide.png"), 20)
    assert image.shape == (20, 20) and image.min() >= 190


def test_label_map_synonyms_explicit_and_drops():
    label_map = LabelMap(("anger", "happiness", "sadness"), ["calm:sadness"])
    assert label_map.class_id("angry") == 0
    assert label_map.class_id("ANG") == 0
    assert label_map.class_id("happy") == 1
    assert label_map.class_id("calm") == 2
    assert label_map.class_id("boredom") is None
    assert label_map.class_id("surprise") is None
    with pytest.raises(ConfigError, match="--label_map entry 'x:joy'"):
        LabelMap(("anger",), ["x:joy"])
