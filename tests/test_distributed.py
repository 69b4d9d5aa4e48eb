"""Data-parallel training (DDP, gloo on CPU) gives the same model as one process, and rank 0 alone logs."""

from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmkd_utils.losses import FitNetHint
from mmkd_utils.models import FusionClassifier
from mmkd_utils.objective import Objective
from mmkd_utils.train import TrainConfig, batches, fit

CONFIG = TrainConfig(epochs=3, lr=1e-2, batch_size=32)
TOLERANCE = 1e-4  # float summation order differs between one process and two; nothing else should


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 6, generator=g)
    labels = (x[:, 0] + x[:, 1] > 0).long()
    return {"x": x, "label": labels, "index": torch.arange(240), "teacher_feat": torch.randn(240, 4, generator=g)}


def model():
    torch.manual_seed(0)
    return FusionClassifier({"x": 6}, 2, hidden=8, dropout=0.0)  # no dropout: ranks would draw different masks


def objective():
    torch.manual_seed(1)
    return Objective("ce", feature_weight=0.5, feature_loss=FitNetHint(8, 4))


def _worker(rank, world_size, init_file, out_file, log_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    m = model()
    hist = fit(m, data(), data(), objective(), replace(CONFIG, log_dir=log_dir))  # both ranks are given a log_dir
    if rank == 0:
        torch.save({"state": m.state_dict(), "val_acc": [e["val_acc"] for e in hist.epochs],
                    "train_total": [e["train_total"] for e in hist.epochs]}, out_file)
    dist.destroy_process_group()


def test_batches_split_each_global_batch_between_ranks():
    d = data()
    gen = lambda: torch.Generator().manual_seed(3)
    single = [b["index"] for b in batches(d, 32, shuffle=True, generator=gen())]
    ranks = [[b["index"] for b in batches(d, 32, shuffle=True, generator=gen(), rank=r, world_size=2)] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for whole, a, b in zip(single, *ranks):
        assert sorted(torch.cat([a, b]).tolist()) == sorted(whole.tolist())


def test_two_gloo_processes_match_one_process(tmp_path):
    torch.set_num_threads(1)
    reference = model()
    ref_hist = fit(reference, data(), data(), objective(), CONFIG)
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out), str(tmp_path / "logs")), nprocs=2, join=True)
    result = torch.load(out, weights_only=True)
    for k, v in reference.state_dict().items():
        assert torch.allclose(v, result["state"][k], atol=TOLERANCE), k
    assert result["val_acc"] == pytest.approx([e["val_acc"] for e in ref_hist.epochs], abs=1e-6)
    assert result["train_total"] == pytest.approx([e["train_total"] for e in ref_hist.epochs], rel=TOLERANCE)
    assert len(list((tmp_path / "logs").glob("events.out.tfevents.*"))) == 1  # rank 0 wrote the TensorBoard log


@pytest.mark.parametrize("fails", [False, True])
def test_the_cli_leaves_the_process_group_at_the_end_of_a_torchrun_script(tmp_path, monkeypatch, fails):
    """``python -m mmkd_utils run`` under torchrun destroys its process group when the run ends, and when it fails."""
    from mmkd_utils import __main__ as cli
    from mmkd_utils import experiment

    def join(config):  # what _init_distributed does under torchrun, as a one-process gloo group
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        return 0

    def fake_run(config, progress, jobs):
        assert dist.is_initialized()  # the run happens inside the group
        if fails:
            raise RuntimeError("a run that fails")
        return {"table": [], "seconds": 0.0}

    monkeypatch.setattr(cli, "_init_distributed", join)
    monkeypatch.setattr(experiment, "run", fake_run)
    args = cli.build_parser().parse_args(["run", "--config", "tiny", "--quiet", "--out_dir", str(tmp_path)])
    if fails:
        with pytest.raises(RuntimeError, match="a run that fails"):
            cli._command(args)
    else:
        cli._command(args)
    assert not dist.is_initialized()
