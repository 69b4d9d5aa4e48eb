"""mmkd_utils.checkpoint: safetensors round trips, clear refusals, atomic writes."""
from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from torch import nn

from mmkd_utils import checkpoint


class TinyNet(nn.Module):
    def __init__(self, hidden: int = 4):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, hidden), nn.Linear(hidden, 2)
        self.register_buffer("scale", torch.tensor([1.5, -2.0]))


class OtherNet(TinyNet):
    pass


def fresh(seed: int, hidden: int = 4) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(hidden)


def test_round_trip_gives_identical_weights_config_and_metrics(tmp_path):
    saved = fresh(0)
    extra = {"temperature": torch.tensor(4.0)}
    checkpoint.save_checkpoint(saved, tmp_path, config={"hidden": 4, "lr": 0.1}, metrics={"acc": 0.5},
                               extra_tensors=extra)
    loaded = fresh(1)
    assert not torch.equal(loaded.fc1.weight, saved.fc1.weight)
    meta = checkpoint.load_checkpoint(loaded, tmp_path, expected_config={"hidden": 4})
    for (name, a), (_, b) in zip(saved.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert meta["config"] == {"hidden": 4, "lr": 0.1} and meta["metrics"] == {"acc": 0.5}
    assert meta["architecture"] == "TinyNet" and torch.equal(meta["extra"]["temperature"], torch.tensor(4.0))


def test_another_architecture_is_refused(tmp_path):
    checkpoint.save_checkpoint(fresh(0), tmp_path, config={})
    with pytest.raises(ValueError, match="holds a TinyNet, not a OtherNet"):
        checkpoint.load_checkpoint(OtherNet(), tmp_path)


def test_other_shapes_are_refused_naming_the_parameters(tmp_path):
    checkpoint.save_checkpoint(fresh(0, hidden=4), tmp_path, config={})
    with pytest.raises(ValueError, match=r"does not fit this model: parameters differ in \['fc1.bias', 'fc1.weight'"):
        checkpoint.load_checkpoint(fresh(0, hidden=5), tmp_path)


def test_expected_config_mismatch_is_refused(tmp_path):
    checkpoint.save_checkpoint(fresh(0), tmp_path, config={"hidden": 4, "temperature": 2.0})
    with pytest.raises(ValueError, match=r"another configuration.*'temperature': \(2\.0, 4\.0\)"):
        checkpoint.load_checkpoint(fresh(0), tmp_path, expected_config={"hidden": 4, "temperature": 4.0})


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a checkpoint"):
        checkpoint.load_checkpoint(fresh(0), tmp_path)


def test_interrupted_write_keeps_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    old = fresh(0)
    checkpoint.save_checkpoint(old, tmp_path, config={"run": 1})
    before = sorted(p.name for p in tmp_path.iterdir())

    def crash_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 16)  # a few bytes of a file that never gets finished
        raise KeyboardInterrupt("interrupted while writing")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(fresh(1), tmp_path, config={"run": 2})
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no .tmp left behind
    restored = fresh(2)
    meta = checkpoint.load_checkpoint(restored, tmp_path)
    assert meta["config"] == {"run": 1}
    assert torch.equal(restored.fc1.weight, old.fc1.weight)


def test_atomic_write_json_round_trip(tmp_path):
    obj = {"name": "größe ✓", "values": [1, 2.5, None], "nested": {"ok": True}}
    path = tmp_path / "sub" / "result.json"
    checkpoint.atomic_write_json(obj, path)
    assert json.loads(path.read_text(encoding="utf8")) == obj
    checkpoint.atomic_write_json({"replaced": 1}, path)
    assert json.loads(path.read_text(encoding="utf8")) == {"replaced": 1}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_weights_replaced_after_the_json_are_detected(tmp_path):
    checkpoint.save_checkpoint(fresh(0), tmp_path / "a", {"hidden": 4})
    checkpoint.save_checkpoint(fresh(1), tmp_path / "b", {"hidden": 4})
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="does not match checkpoint.json"):
        checkpoint.load_checkpoint(fresh(2), tmp_path / "a")
