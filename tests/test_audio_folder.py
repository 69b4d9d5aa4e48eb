"""Your own recordings as the audio modality: a folder whose metadata.csv has an ``audio_file`` column (each row's
wav or flac file) is loaded with its audio copied in (mono, 16 kHz, int16), and ``--speech recorded`` trains the
audio teacher and student on it; unreadable recordings and configurations that cannot work are named. The
folder is built here: small pictures and short tones whose pitch depends on the class."""
import csv
import json
import shutil

import numpy as np
import pytest
import soundfile
from PIL import Image, ImageDraw

from mmkd_utils import data as data_mod
from mmkd_utils import waveform
from mmkd_utils.__main__ import main
from mmkd_utils.config import get_config
from mmkd_utils.speech import SAMPLE_RATE

PITCH = {"low": 220.0, "mid": 440.0, "high": 880.0}  # Hz: each class's tone
STEREO_ROW = 5  # this row's recording: 22,050 Hz, the tone in the left channel only, silence in the right
FLOAT_ROW = 7  # this row's recording: 32-bit float samples


def tone(pitch, seconds, rate, amplitude=0.5):
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * pitch * t)).astype(np.float32)


def make_folder(folder, n_per_class=8, layout="file_name", audio=True):
    """24 rows: a coloured disc per class and a tone of the class's pitch (0.5-0.85 s; wav or flac).
    ``layout``: "file_name" (imagefolder, one metadata.csv), "file" (read by hand), or "splits" (train/
    validation/ test/ subfolders, each with its own metadata.csv: recordings relative to it)."""
    rows = []
    for c, (kind, pitch) in enumerate(PITCH.items()):
        for i in range(n_per_class):
            k = c * n_per_class + i
            split = ("train", "train", "train", "train", "train", "train", "validation", "test")[i] \
                if layout == "splits" else None
            home = folder / split if split else folder
            (home / "sounds").mkdir(parents=True, exist_ok=True)
            image = Image.new("RGB", (32, 32), "white")
            ImageDraw.Draw(image).ellipse([4 + i, 4 + i, 24 + i, 24 + i], fill=("red", "green", "blue")[c])
            image.save(home / f"{kind}{i}.png")
            seconds = 0.5 + 0.05 * i
            if k == STEREO_ROW:
                left = tone(pitch, seconds, 22050)
                soundfile.write(home / "sounds" / f"{kind}{i}.wav", np.stack([left, np.zeros_like(left)], 1), 22050,
                                subtype="PCM_16")
                name = f"sounds/{kind}{i}.wav"
            elif k == FLOAT_ROW:
                soundfile.write(home / "sounds" / f"{kind}{i}.wav", tone(pitch, seconds, SAMPLE_RATE), SAMPLE_RATE,
                                subtype="FLOAT")
                name = f"sounds/{kind}{i}.wav"
            else:
                name = f"sounds/{kind}{i}.{'flac' if k % 2 else 'wav'}"
                soundfile.write(home / name, tone(pitch, seconds, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
            rows.append({("file" if layout == "file" else "file_name"): f"{kind}{i}.png",
                         **({"audio_file": name} if audio else {}), "kind": kind, "_split": split})
    for split in (("train", "validation", "test") if layout == "splits" else (None,)):
        mine = [{k: v for k, v in r.items() if k != "_split"} for r in rows if r["_split"] == split]
        with open((folder / split if split else folder) / "metadata.csv", "w", newline="", encoding="utf8") as f:
            writer = csv.DictWriter(f, fieldnames=list(mine[0]))
            writer.writeheader()
            writer.writerows(mine)
    return folder


def dominant_pitch(clip, rate=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(clip.astype(np.float64)))
    return np.fft.rfftfreq(len(clip), 1 / rate)[spectrum.argmax()]


@pytest.mark.parametrize("layout", ["file_name", "file", "splits"])
def test_a_folder_keeps_each_rows_recording_mono_at_16_khz(tmp_path, layout):
    folder = make_folder(tmp_path / "tones", layout=layout)
    ds = data_mod.load_image_folder(folder, label_column="kind")
    shutil.rmtree(folder)  # copied in: the folder may go
    assert data_mod.modalities(ds) == ("image",)  # the recordings are no modality until --speech recorded
    rows = [r for s in data_mod.SPLITS for r in ds[s]]
    assert len(rows) == 24 and ds["train"].features["audio"].feature.dtype == "int16"
    if layout == "splits":
        assert [len(ds[s]) for s in data_mod.SPLITS] == [18, 3, 3]
    names = ds["train"].features["kind"].names
    lengths, peaks = [], []
    for r in rows:
        clip = np.asarray(r["audio"], dtype=np.int16)
        heard = dominant_pitch(clip)
        assert abs(heard - PITCH[names[r["kind"]]]) < 5, (names[r["kind"]], heard)  # resampled, not re-pitched
        lengths.append(len(clip))
        peaks.append(np.abs(clip).max() / 32768)
    # every length is a written duration at 16 kHz (within the resampler's rounding): the 22,050 Hz file's too
    durations = [(0.5 + 0.05 * i) * SAMPLE_RATE for i in range(8)]
    assert all(min(abs(n - d) for d in durations) <= 1 for n in lengths), sorted(lengths)
    # every tone peaks at 0.5 but the stereo file's, whose silent right channel halves it when averaged to mono
    assert sorted(peaks)[1] == pytest.approx(0.5, abs=0.01) and max(peaks) == pytest.approx(0.5, abs=0.01)
    assert min(peaks) == pytest.approx(0.25, abs=0.01)


def test_float_and_integer_recordings_become_the_same_int16_samples(tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    wave = tone(440.0, 0.25, SAMPLE_RATE)
    soundfile.write(folder / "float.wav", wave, SAMPLE_RATE, subtype="FLOAT")
    soundfile.write(folder / "int.flac", wave, SAMPLE_RATE, subtype="PCM_16")
    as_float = waveform.read_recording("float.wav", folder, "here")
    as_int = waveform.read_recording("int.flac", folder, "here")
    assert as_float.dtype == as_int.dtype == np.int16
    assert np.abs(as_float.astype(int) - as_int.astype(int)).max() <= 1  # float scaled by 32768, as audio.to_float undoes
    assert np.abs(as_float).max() > 16000


@pytest.mark.parametrize("problem", ["not audio", "missing", "empty cell"])
def test_an_unreadable_recording_names_the_row_the_file_and_the_fix(tmp_path, problem):
    folder = make_folder(tmp_path / "tones")
    lines = (folder / "metadata.csv").read_text(encoding="utf8").splitlines()
    bad = lines[4].split(",")  # the 4th row under the header: row 5 of the file (file_name, audio_file, kind)
    if problem == "not audio":
        (folder / bad[1]).write_text("this is not a recording")
    elif problem == "missing":
        (folder / bad[1]).unlink()
    else:
        lines[4] = ",".join([bad[0], "", bad[2]])
        (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf8")
    with pytest.raises(ValueError) as err:
        data_mod.load_image_folder(folder, label_column="kind")
    message = str(err.value)
    assert message.startswith(f"row 5 of {folder / 'metadata.csv'}:"), message
    assert "remove that row" in message and "'audio_file'" in message
    if problem != "empty cell":
        assert str(folder / bad[1]) in message and "cannot read recording" in message
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as stop:  # from the command line: a message, nothing written
        main(["run", "--config", "tiny", "--quiet", "--data", str(folder), "--label", "kind", "--speech", "recorded",
              "--students", "audio", "--distill_from", "audio", "--out_dir", str(out)])
    assert str(stop.value).startswith("error: row 5 of") and not out.exists()


@pytest.mark.parametrize("overrides, message", [
    (dict(speech=("recorded",)), "it needs --data FOLDER"),  # OpenMoji has no recordings of its own
    (dict(speech=("us",), data="FOLDER"), "use --speech recorded"),  # the voices speak OpenMoji's names only
    (dict(speech=("recorded", "us"), data="FOLDER"), "stands alone"),
    (dict(speech=("recorded",), data="FOLDER", ood_test="noto"), "drop --ood_test"),
])
def test_bad_recorded_configurations_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_config("tiny", **overrides)


def test_recorded_without_an_audio_column_says_which_column_to_add(tmp_path):
    folder = make_folder(tmp_path / "silent", audio=False)
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as stop:
        main(["run", "--config", "tiny", "--quiet", "--data", str(folder), "--label", "kind", "--speech", "recorded",
              "--students", "audio", "--distill_from", "audio", "--out_dir", str(out)])
    message = str(stop.value)
    assert message.startswith("error: --speech recorded") and "'audio_file' column" in message and "drop --speech" in message
    assert not out.exists()


def test_recorded_audio_trains_the_audio_teacher_and_student_end_to_end(tmp_path, monkeypatch, capsys):
    import torch

    from mmkd_utils.audio import encode_audio, student_log_mel
    from mmkd_utils.prepare import prepare_data
    from mmkd_utils.publish import readme_block

    monkeypatch.setenv("MMKD_CACHE_DIR", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "tones")
    out = tmp_path / "results"
    main(["run", "--config", "tiny", "--quiet", "--data", str(folder), "--label", "kind", "--speech", "recorded",
          "--students", "audio", "--methods", "labels,soft", "--distill_from", "audio", "--seeds", "0",
          "--teacher_epochs", "2", "--student_epochs", "1", "--out_dir", str(out), "--name", "recorded"])
    result = json.loads((out / "recorded" / "results.json").read_text(encoding="utf8"))
    rows = {f"{r['model']} · {r['method']}": r for r in result["rows"]}
    assert set(rows) == {"teacher (audio) · labels", "teacher (image) · labels", "audio student · labels",
                         "audio student · soft"}  # no text column: no fusion, text or trimodal teacher
    n_test = len(data_mod.load_image_folder(folder, label_column="kind")["test"])
    for key, row in rows.items():
        assert len(row["test_correct"]) == n_test and 0 <= row["accuracy"] <= 1, key
        assert "speech_accuracy" not in row, key  # no voices to test on
    assert rows["teacher (audio) · labels"]["uncounted"].startswith("the Whisper")
    assert any("skipped the trimodal teacher: the dataset has no text column" in n for n in result["notes"])
    assert result["config"]["speech"] == ["recorded"]
    md = (out / "recorded" / "results.md").read_text(encoding="utf8")
    assert "| audio student | soft |" in md and "Heard by every voice" not in md
    block = readme_block(out / "recorded")  # publishing does not assume voices either
    assert "--speech recorded" in block and "held-out" not in block
    assert "wrote" in capsys.readouterr().out

    # the audio columns are the recordings through the same cached encoders: the cache serves them again
    config = get_config("tiny", data=str(folder), label="kind", speech=("recorded",), students=("audio",),
                        distill_from="audio")
    data = prepare_data(config)
    assert data.modalities == ("image", "audio") and not data.speech_tests
    clips = [np.asarray(a, dtype=np.int16) for a in data.dataset["test"]["audio"]]
    assert data.test["audio_feat"].shape == (n_test, 384) and data.test["audio"].shape == (n_test, 1, 32, 93)
    assert torch.equal(data.test["audio_feat"], encode_audio(clips, cache=False))
    assert torch.equal(data.test["audio"], student_log_mel(clips, cache=False))
    assert len(list((tmp_path / "cache").rglob("*"))) > 0
