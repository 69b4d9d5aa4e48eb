"""The speech modality inside an experiment (issue 23): ``--speech VOICES`` adds the audio columns, the audio
teachers and student, and tests every model that hears on every voice; rows keep their voice; bad
configurations are named. A few rows only (each synthesised and encoded alone), so this stays quick."""
import json

import numpy as np
import pytest
import torch

from mmkd_utils import audio, speech
from mmkd_utils.config import get_config
from mmkd_utils.experiment import run, runnable
from mmkd_utils.prepare import prepare_data
from mmkd_utils.train import TrainConfig

FEW = dict(subset=12, seeds=(0,), timing=False, teacher_train=TrainConfig(epochs=2, batch_size=8),
           student_train=TrainConfig(epochs=1, batch_size=8))


def test_voice_assignment_is_balanced_fixed_and_seeded():
    who = audio.voice_assignment(2784, 4, data_seed=0)
    assert sorted(np.bincount(who)) == [696] * 4
    assert np.array_equal(who, audio.voice_assignment(2784, 4, data_seed=0))
    assert not np.array_equal(who, audio.voice_assignment(2784, 4, data_seed=1))
    assert set(audio.voice_assignment(10, 1)) == {0}


@pytest.mark.parametrize("bad, match", [
    (dict(speech=("flite-slt",)), "training voices"),  # a held-out voice is only ever tested on
    (dict(speech=("us", "us")), "each once"),
    (dict(speech=("us",), ood_test="noto"), "no --ood_test"),
])
def test_bad_speech_configurations_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        get_config("tiny", **bad)


def test_without_speech_nothing_mentions_audio():
    data = prepare_data(get_config("tiny", subset=8))
    teachers, _, notes = runnable(get_config("tiny", subset=8), data)
    assert teachers == ["fusion", "text", "image"] and not any("audio" in n for n in notes)
    with pytest.raises(ValueError, match="--speech"):
        runnable(get_config("tiny", subset=8, distill_from="audio"), data)
    with pytest.raises(ValueError, match="--speech"):
        runnable(get_config("tiny", subset=8, students=("audio",)), data)
    only = get_config("tiny", subset=8, teachers=("text",), distill_from="fusion")
    assert runnable(only, data)[0] == ["fusion", "text"]  # the one distilled from is always trained
    with pytest.raises(ValueError, match="unknown teacher"):
        get_config("tiny", teachers=("speech",))


def test_speech_columns_are_the_rows_voices(tmp_path, monkeypatch):
    """Each row's audio is its assigned voice saying its own name: the mixed columns are rows of the per-voice ones."""
    monkeypatch.setenv("MMKD_CACHE_DIR", str(tmp_path))
    rows = [3, 0, 11, 5]
    mixed = audio.speech_columns("test", ("us", "rp-fast-low"), data_seed=0, rows=rows)
    who = audio.voice_assignment(563, 2, 0)[rows]
    alone = [audio.voice_columns("test", v, rows) for v in ("us", "rp-fast-low")]
    for i, v in enumerate(who):
        assert torch.equal(mixed["audio"][i], alone[v]["audio"][i])
        assert torch.equal(mixed["audio_feat"][i], alone[v]["audio_feat"][i])
    assert mixed["audio"].shape == (4, 1, audio.STUDENT_MEL["n_mels"], 93)


def test_a_speech_experiment_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_CACHE_DIR", str(tmp_path / "cache"))
    config = get_config("tiny", out_dir=str(tmp_path), name="speech", speech=("us", "british-f"), students=("audio",),
                        methods=("labels", "soft"), distill_from="audio", **FEW)
    result = run(config, progress=False)
    rows = {r["model"] + " · " + r["method"]: r for r in result["rows"]}
    assert set(rows) == {"teacher (fusion) · labels", "teacher (text) · labels", "teacher (image) · labels",
                         "teacher (audio) · labels", "teacher (trimodal) · labels", "audio student · labels",
                         "audio student · soft"}
    voices = set(speech.VOICES) | {"held-out"}  # no "human" on a subset
    for key, row in rows.items():
        hears = "audio" in key or "trimodal" in key
        assert ("speech_accuracy" in row) == hears, key
        if hears:
            assert set(row["speech_accuracy"]) == voices
            assert all(len(c) == 12 for c in row["speech_correct"].values())
            held = [row["speech_accuracy"][v] for v in speech.HELD_OUT_VOICES]
            assert row["speech_accuracy"]["held-out"] == pytest.approx(sum(held) / 3)
    assert rows["teacher (audio) · labels"]["uncounted"].startswith("the Whisper")
    soft = next(e for e in result["table"] if e["model"] == "audio student" and e["method"] == "soft")
    assert set(soft["vs_labels_speech"]) == voices
    md = (tmp_path / "speech" / "results.md").read_text(encoding="utf8")
    assert "Heard by every voice" in md and "| audio student | soft |" in md
    assert json.loads((tmp_path / "speech" / "results.json").read_text())["config"]["speech"] == ["us", "british-f"]


def test_the_speech_table_leaves_human_blank_for_models_that_also_see():
    """The trimodal teacher is not tested on the human words (they have no picture): its cell is a dash."""
    from mmkd_utils.report import speech_markdown

    acc = {"mean": 0.5, "std": 0.1}
    table = [{"model": "teacher (trimodal)", "method": "labels", "n_seeds": 2, "speech_accuracy": {"us": acc, "held-out": acc}},
             {"model": "audio student", "method": "labels", "n_seeds": 2, "speech_accuracy": {"us": acc, "held-out": acc, "human": acc}}]
    lines = speech_markdown(table).splitlines()
    assert "human (%)" in lines[0] and lines[2].count("—") == 3 and lines[3].count("—") == 2
