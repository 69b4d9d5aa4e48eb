"""The speech modality (issue 23): the spoken names match data/speech/MANIFEST.json and are synthesised the same
bit for bit, their rows and labels are the OpenMoji splits', the human recordings match their manifest and
labels, the datasheet's counts come from the manifest, the audio teacher's features and the student's inputs
have the right shapes and are deterministic, and a missing system package or a bad voice is named."""
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from mmkd_utils import audio, speech, speech_data
from mmkd_utils.data import load_openmoji
from mmkd_utils.paths import repo_root


@pytest.fixture(scope="module")
def openmoji():
    return load_openmoji()


@pytest.fixture(scope="module")
def manifest():
    return speech.load_manifest()


def test_manifest_rows_are_the_openmoji_splits_row_for_row(openmoji, manifest):
    for s in speech.SPLITS:
        assert manifest["rows"][s] == {"n": len(openmoji[s]), "sha256": speech.split_rows_hash(openmoji[s])}
    for name, voice in speech.VOICES.items():
        entry = manifest["voices"][name]
        assert set(entry["splits"]) == set(voice.splits)  # held-out voices: validation and test only
        for s, e in entry["splits"].items():
            assert e["n_clips"] == len(openmoji[s]) and e["empty"] == []


def test_spoken_clips_are_aligned_cached_and_checked(openmoji, tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_CACHE_DIR", str(tmp_path))
    rows = openmoji["test"].select([5, 0, 7])
    clips = speech.spoken(rows, "us")
    assert [c.tolist() for c in clips] == [c.tolist() for c in speech.synthesize(list(rows["text"]), "us")]
    assert len(list(tmp_path.glob("speech-*.safetensors"))) == 1
    again = speech.spoken(rows, "us")  # from the cache
    assert all(np.array_equal(a, b) for a, b in zip(clips, again))
    fake = {"engines": {}, "voices": {"us": {"splits": {"test": {"sha256": speech.clips_hash(clips)}}}}}
    assert speech.check_against_manifest(clips, "us", "test", fake)
    with pytest.warns(UserWarning, match="differs from data/speech/MANIFEST.json"):
        assert not speech.check_against_manifest(clips[:2], "us", "test", fake)


@pytest.mark.parametrize("voice", ["us", "rp-fast-low", "flite-slt"])
def test_probe_clips_match_the_manifest(openmoji, manifest, voice):
    """The first rows of a split, synthesised here, are the manifest's clips to the bit (each engine)."""
    n = manifest["probe_rows"]
    clips = speech.synthesize(list(openmoji["test"]["text"][:n]), voice)
    assert [speech.clips_hash([c]) for c in clips] == manifest["voices"][voice]["splits"]["test"]["probe"]


def test_synthesis_is_the_same_bit_for_bit_in_another_process(openmoji):
    texts = list(openmoji["validation"]["text"][:3])
    code = ("import sys; from mmkd_utils import speech\n"
            "for v in ('caribbean-fast', 'british-f'):\n"
            f"    print(speech.clips_hash(speech.synthesize({texts!r}, v)))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    here = [speech.clips_hash(speech.synthesize(texts, v)) for v in ("british-f", "caribbean-fast")]  # other order
    assert other.stdout.split() == here[::-1]
    assert len(set(here)) == 2  # two voices, two different audios


def test_human_recordings_match_their_manifest_and_labels(openmoji, manifest):
    rows, clips = speech_data.load_human()
    human = manifest["human"]
    assert len(rows) == human["n_kept"] == human["n_exact"] + human["n_inside"]
    assert [speech.clips_hash([c]) for c in clips] == [r["sha256"] for r in rows]
    import hashlib

    assert hashlib.sha256("".join(r["sha256"] for r in rows).encode()).hexdigest() == human["content_sha256"]
    names = openmoji["train"].features["group"].names
    all_rows = [dict(r, split=s) for s in speech.SPLITS for r in openmoji[s].remove_columns("image")]
    for r in rows:
        kind, matched = speech_data.match_word(r["word"], all_rows)
        assert kind == r["kind"] and " ".join(m["codepoints"] for m in matched) == r["codepoints"]
        assert {names[m["group"]] for m in matched} == {r["group"]}, r["word"]
        assert 0.2 < len(clips[rows.index(r)]) / speech.SAMPLE_RATE < 3
    assert (repo_root() / "data" / "speech" / "human" / "LICENSE-ktuberling-copyright.txt").exists()


def test_match_word_is_whole_words():
    rows = [{"text": "rocket"}, {"text": "hot pepper"}, {"text": "pepperoni pizza"}, {"text": "eye"}]
    assert speech_data.match_word("rocket", rows)[0] == "exact"
    assert speech_data.match_word("pepper", rows) == ("inside", [{"text": "hot pepper"}])  # not "pepperoni"
    assert speech_data.match_word("ye", rows) == ("none", [])


def test_datasheet_counts_come_from_the_manifest(manifest):
    readme = (repo_root() / "data" / "README.md").read_text(encoding="utf8")
    assert f"<!-- speech:start -->\n{speech_data.counts_line(manifest)}\n<!-- speech:end -->" in readme


def test_bad_voice_names_are_named():
    with pytest.raises(ValueError, match="unknown voice 'nonesuch'"):
        speech.get_voice("nonesuch")
    with pytest.raises(ValueError, match="espeak-ng has no voice 'xx-nonesuch'"):
        speech.synthesize(["dog"], speech.Voice("espeak-ng", "xx-nonesuch"))
    with pytest.raises(ValueError, match="flite has no voice 'nonesuch'"):
        speech.synthesize(["dog"], speech.Voice("flite", "nonesuch"))


def test_missing_system_packages_name_the_fix(tmp_path):
    with pytest.raises(speech.SpeechToolMissing, match="apt-get install espeak-ng"):
        speech.synthesize(["dog"], "us", library="libnonesuch-espeak.so.1")
    with pytest.raises(speech.SpeechToolMissing, match="apt-get install flite"):
        speech.synthesize(["dog"], "flite-slt", flite_program="nonesuch-flite")
    with pytest.raises(speech.SpeechToolMissing, match="apt-get install ktuberling-data"):
        speech_data.build_human(tmp_path / "out", source=tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="make data"):
        speech_data.load_human(tmp_path)


@pytest.fixture(scope="module")
def few_clips(openmoji):
    texts = ["dog", "rocket", "flag: Japan"]
    return {v: speech.synthesize(texts, v) for v in ("us", "scottish-slow")}


def test_teacher_features_shape_determinism_and_cache(few_clips, tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_CACHE_DIR", str(tmp_path))
    clips = few_clips["us"]
    first = audio.encode_audio(clips)
    assert first.shape == (3, audio.WHISPER_DIM) and first.dtype == torch.float32 and torch.isfinite(first).all()
    assert torch.equal(first, audio.encode_audio(clips, cache=False))  # recomputed: the same numbers
    audio.encode_audio(few_clips["scottish-slow"])  # other audio, another key
    assert len(list(tmp_path.glob("features-audio-*.safetensors"))) == 2
    # pretrained, not noise: each word is nearer to itself in another voice than to the other words
    other = torch.nn.functional.normalize(audio.encode_audio(few_clips["scottish-slow"]), dim=1)
    similarity = torch.nn.functional.normalize(first, dim=1) @ other.T  # (3, 3)
    assert (similarity.argmax(1) == torch.arange(3)).all(), similarity


def test_teacher_weights_are_checked():
    with pytest.raises(audio.AudioTeacherError, match="SHA-256"):
        audio.WhisperEncoder(expected_sha256="0" * 64)
    assert audio.file_sha256(str(audio.whisper_path() / "model.bin")) == audio.WHISPER_SHA256


def test_student_inputs_and_audio_cnn_shapes(few_clips):
    from mmkd_utils.models import AudioCNN, count_parameters

    long_clip = np.concatenate(few_clips["scottish-slow"] * 3)  # longer than 3 s: cut
    mel = audio.student_log_mel([*few_clips["us"], long_clip], cache=False)
    frames = 3 * speech.SAMPLE_RATE // (speech.SAMPLE_RATE * 32 // 1000)  # Whisper's extractor keeps whole hops: 48000 // 512
    assert frames == 93
    assert mel.shape == (4, 1, audio.STUDENT_MEL["n_mels"], frames) and mel.dtype == torch.float16
    assert len(long_clip) > 3 * speech.SAMPLE_RATE
    model = AudioCNN(num_classes=9)
    assert 20_000 < count_parameters(model) < 30_000
    logits = model({"audio": mel})
    assert logits.shape == (4, 9)
    logits.sum().backward()
    with pytest.raises(ValueError, match=r"\(B, 1, n_mels, frames\)"):
        model({"audio": mel[:, 0]})
