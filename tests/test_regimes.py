"""Data regimes: label corruption, folds for cross-fitting."""
import torch

from mmkd_utils.regimes import corrupt_labels


def test_corrupt_labels_flips_and_hides_the_stated_shares():
    labels = torch.arange(1000) % 9
    noisy = corrupt_labels(labels, 9, noise=0.2, seed=0)
    assert (noisy != labels).sum() == 200 and noisy.min() >= 0 and noisy.max() < 9
    limited = corrupt_labels(labels, 9, label_fraction=0.1, seed=0)
    assert (limited >= 0).sum() == 100 and torch.equal(limited[limited >= 0], labels[limited >= 0])
    assert torch.equal(corrupt_labels(labels, 9, 0.1, 0.2, seed=3), corrupt_labels(labels, 9, 0.1, 0.2, seed=3))


def test_folds_keep_each_group_together_and_are_balanced():
    from mmkd_utils.regimes import folds_by_group

    groups = [f"base{i // 3}" for i in range(60)]  # 20 groups of 3 near-duplicates
    folds = folds_by_group(groups, 4, seed=0)
    for g in set(groups):
        assert len({int(folds[i]) for i, h in enumerate(groups) if h == g}) == 1
    assert sorted(torch.bincount(folds).tolist()) == [15, 15, 15, 15]
    assert torch.equal(folds, folds_by_group(groups, 4, seed=0))
    assert not torch.equal(folds, folds_by_group(groups, 4, seed=1))


def test_folds_by_row_and_too_many_folds():
    import pytest

    from mmkd_utils.regimes import folds_by_group, folds_by_row

    folds = folds_by_row(10, 3, seed=0)
    assert sorted(torch.bincount(folds).tolist()) == [3, 3, 4]
    with pytest.raises(ValueError, match="fewer folds"):
        folds_by_group(["a", "a", "b"], 3)


def test_append_rows_widens_token_ids_and_labelled_only_keeps_labelled_rows():
    from mmkd_utils.regimes import append_rows, labelled_only

    data = {"text_ids": torch.ones(2, 3, dtype=torch.long), "label": torch.tensor([0, -1])}
    extra = {"text_ids": torch.full((1, 5), 2), "label": torch.tensor([-1])}
    both = append_rows(data, extra)
    assert both["text_ids"].shape == (3, 5) and both["text_ids"][0].tolist() == [1, 1, 1, 0, 0]
    assert both["label"].tolist() == [0, -1, -1]
    assert labelled_only(both)["label"].tolist() == [0]
