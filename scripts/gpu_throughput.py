"""Teacher-training throughput on a GPU, with and without mixed precision (issue: performance).

Fine-tunes the end-to-end fusion teacher (MobileNetV2 + MiniLM + fusion head, all weights trainable)
on the shipped OpenMoji data for a few epochs per setting and reports examples per second. The first
epoch (CUDA and cuDNN warm-up, and compiling where asked) is reported apart from the later, steady-state
epochs, which the throughput is computed from; each run records the mixed-precision dtype that
``train.amp_settings`` chose (bf16 only on compute capability ≥ 8.0, else fp16 with a GradScaler). Needs no
internet (offline assets), so it runs on a lent accelerator as is:

    HF_HUB_OFFLINE=1 python scripts/gpu_throughput.py --out "$OUT"
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/gpu")
    parser.add_argument("--epochs", type=int, default=3, help="≥ 2: the first is reported apart")
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()

    from mmkd_utils.config import get_config
    from mmkd_utils.data import load_openmoji
    from mmkd_utils.encoders import load_image_encoder, load_text_encoder
    from mmkd_utils.env import library_versions, seed_everything
    from mmkd_utils.prepare import raw_teacher_inputs
    from mmkd_utils.models import FusionClassifier
    from mmkd_utils.train import TrainConfig, amp_settings, fit

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: this script measures GPU throughput")
    if args.epochs < 2:
        raise SystemExit("--epochs must be ≥ 2: the first epoch is reported apart from the steady state")
    config = get_config("cpu")
    split = load_openmoji()["train"]
    text_encoder = load_text_encoder(config.text_encoder)
    raw = raw_teacher_inputs(split, config, {"image_feat": None, "text_feat": text_encoder})
    data = {"image_feat": raw["image_feat"], "label": torch.tensor(list(split["group"])),
            "index": torch.arange(len(split))}
    # the text input is a dict of token tensors; fit's batching slices tensors, so keep them as columns
    data["text_ids"], data["text_mask"] = raw["text_feat"]["input_ids"], raw["text_feat"]["attention_mask"]

    class TextInput(torch.nn.Module):  # reads the two token columns
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, batch):
            return self.encoder(batch["text_ids"], batch["text_mask"])

    results = []
    for amp in (False, True):
        for channels_last in ((False, True) if amp else (False,)):
            seed_everything(0)
            image_encoder = load_image_encoder(config.image_encoder).train()
            head = FusionClassifier({"image_feat": image_encoder.out_dim, "text_feat": text_encoder.out_dim}, 9,
                                    encoders={"image_feat": image_encoder})
            trainable_text_encoder = load_text_encoder(config.text_encoder).train()  # fine-tuned too
            model = _Teacher(head, TextInput(trainable_text_encoder))
            train_config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=1e-4, amp=amp,
                                       channels_last=channels_last, scheduler="none")
            torch.cuda.synchronize()
            start = time.perf_counter()
            history = fit(model, data, config=replace(train_config))
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            steady = history.epoch_seconds[1:]  # the epochs after the first, which pays the warm-up
            use_amp, amp_dtype = amp_settings(train_config, torch.device("cuda"))
            results.append({"amp": amp, "dtype": str(amp_dtype).removeprefix("torch.") if use_amp else "float32",
                            "channels_last": channels_last, "epochs": args.epochs,
                            "examples_per_second": len(steady) * len(split) / sum(steady),
                            "first_epoch_seconds": history.epoch_seconds[0], "seconds": seconds,
                            "max_memory_gb": torch.cuda.max_memory_allocated() / 1e9})
            torch.cuda.reset_peak_memory_stats()
            print(results[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_throughput.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name(), "compute_capability": list(torch.cuda.get_device_capability()),
         "versions": library_versions(), "runs": results}, indent=1) + "\n")


class _Teacher(torch.nn.Module):
    """Fusion head whose text branch is computed from token columns by the text encoder."""

    def __init__(self, head, text):
        super().__init__()
        self.head, self.text = head, text
        self.inputs = ("image_feat", "text_ids", "text_mask")

    def forward(self, batch):
        return self.head({"image_feat": batch["image_feat"], "text_feat": self.text(batch)})


if __name__ == "__main__":
    main()
