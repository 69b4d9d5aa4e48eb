"""plots.training_curves: the lines carry the histories' values, the best epoch is marked, bad input is named."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mmkd_utils import plots  # noqa: E402
from mmkd_utils.train import History  # noqa: E402


def history(val_acc, best_epoch, with_val=True):
    """A History as fit writes it: one record per epoch (0-based), val_* only when there was a val split."""
    epochs = []
    for i, acc in enumerate(val_acc):
        record = {"epoch": i, "train_ce": 2.0 - 0.1 * i, "train_total": 2.0 - 0.1 * i, "lr": 1e-3}
        if with_val:
            record.update(val_loss=1.0 - acc, val_acc=acc)
        epochs.append(record)
    return History(epochs=epochs, best_epoch=best_epoch, best_score=max(val_acc) if with_val else float("nan"))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_each_line_carries_its_history_values_against_one_based_epochs():
    runs = {"a": history([0.5, 0.7, 0.6], best_epoch=1), "b": history([0.2, 0.3, 0.4, 0.45], best_epoch=3)}
    ax = plots.training_curves(runs, mark_best=False)
    lines = ax.get_lines()
    assert len(lines) == 2
    assert list(lines[0].get_xdata()) == [1, 2, 3] and list(lines[0].get_ydata()) == [0.5, 0.7, 0.6]
    assert list(lines[1].get_xdata()) == [1, 2, 3, 4] and list(lines[1].get_ydata()) == [0.2, 0.3, 0.4, 0.45]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "val acc" and ax.get_title()


def test_another_key_plots_that_column():
    ax = plots.training_curves({"a": history([0.5, 0.7, 0.6], best_epoch=1)}, key="train_ce", mark_best=False)
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([2.0, 1.9, 1.8])
    assert ax.get_ylabel() == "train ce"


def test_the_best_epoch_is_marked_on_its_own_line_in_its_colour():
    runs = {"a": history([0.5, 0.7, 0.6], best_epoch=1), "b": history([0.2, 0.3, 0.4, 0.45], best_epoch=3)}
    ax = plots.training_curves(runs)
    curves, markers = ax.get_lines()[0::2], ax.get_lines()[1::2]
    assert [(list(m.get_xdata()), list(m.get_ydata())) for m in markers] == [([2], [0.7]), ([4], [0.45])]
    assert all(m.get_marker() == "*" and m.get_linestyle() == "None" for m in markers)
    assert [m.get_color() for m in markers] == [c.get_color() for c in curves]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (best: epoch 2)", "b (best: epoch 4)"]


def test_the_marker_sits_on_the_plotted_key_at_the_best_epoch():
    ax = plots.training_curves({"a": history([0.5, 0.7, 0.6], best_epoch=1)}, key="val_loss")
    marker = ax.get_lines()[1]
    assert list(marker.get_xdata()) == [2] and list(marker.get_ydata()) == pytest.approx([0.3])


def test_a_run_without_validation_has_no_marker():
    ax = plots.training_curves({"a": history([0.5, 0.6], best_epoch=-1, with_val=False)}, key="train_total")
    assert len(ax.get_lines()) == 1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a"]


def test_draws_on_a_given_axis():
    fig, (left, right) = plt.subplots(1, 2)
    assert plots.training_curves({"a": history([0.5, 0.6], best_epoch=1)}, ax=right) is right
    assert not left.get_lines() and len(right.get_lines()) == 2


def test_a_bad_key_names_the_available_keys():
    with pytest.raises(KeyError, match=r"'val_accuracy'.*\['lr', 'train_ce', 'train_total', 'val_acc', 'val_loss'\]"):
        plots.training_curves({"a": history([0.5, 0.6], best_epoch=1)}, key="val_accuracy")


def test_val_key_without_a_validation_split_says_why():
    with pytest.raises(KeyError, match=r"fit\(\.\.\., val=\.\.\.\)"):
        plots.training_curves({"a": history([0.5, 0.6], best_epoch=-1, with_val=False)})


@pytest.mark.parametrize("histories", [{}, [], "history"], ids=["empty", "list", "str"])
def test_histories_must_be_a_non_empty_dict(histories):
    with pytest.raises(TypeError, match=r"\{label: History\}"):
        plots.training_curves(histories)


def test_a_single_history_instead_of_a_dict_is_refused():
    with pytest.raises(TypeError, match="History"):
        plots.training_curves(history([0.5, 0.6], best_epoch=1))
