"""Teacher signals: cross-fitted logits and a transfer set (cached views: tests/test_views.py)."""
import pytest
import torch

from mmkd_utils.config import get_config


def test_crossfit_logits_come_from_teachers_that_never_saw_the_row(monkeypatch):
    import mmkd_utils.experiment as exp
    import mmkd_utils.recipes as recipes
    from mmkd_utils.prepare import prepare_data
    from mmkd_utils.signals import crossfit_logits

    config = get_config("tiny", crossfit=3, students=("text",), methods=("soft",), distill_from="text")
    data = prepare_data(config)
    seen = []
    real_fit = recipes.fit

    def recording_fit(model, train, *args, **kwargs):
        seen.append(set(train["index"].tolist()))
        return real_fit(model, train, *args, **kwargs)

    monkeypatch.setattr(recipes, "fit", recording_fit)  # every teacher is trained by recipes.train_teacher
    monkeypatch.setattr(exp, "fit", recording_fit)  # the students, by the experiment
    logits = crossfit_logits("text", config, data, seed=0)
    folds = data.signals["crossfit"]["folds"]
    assert len(seen) == 3 and logits.shape == (folds.shape[0], data.num_classes)
    for k, trained_on in enumerate(seen):
        held_out = set(data.train["index"][folds == k].tolist())
        assert held_out and not (trained_on & held_out)  # never trained on the rows it labels
        assert trained_on | held_out == set(data.train["index"].tolist())  # and trained on all the others
    seen.clear()
    rows = exp.run_seed(config, data, seed=0, read_test=False)  # the experiment uses them: 1 teacher + 3 folds + 1 student
    assert len(seen) == 5 and [r["method"] for r in rows] == ["soft"]
    with pytest.raises(ValueError, match="crossfit"):
        get_config("tiny", crossfit=1)
    with pytest.raises(ValueError, match="cannot be combined"):  # declared by the signals themselves
        get_config("tiny", crossfit=3, teacher_views=3)


def test_transfer_set_is_generic_vocabulary_labelled_by_the_teacher(text_encoder, monkeypatch):
    import mmkd_utils.experiment as exp
    from mmkd_utils.prepare import prepare_data
    from mmkd_utils.recipes import build_teacher
    from mmkd_utils.regimes import transfer_vocabulary
    from mmkd_utils.signals import transfer_columns

    words = transfer_vocabulary(text_encoder.tokenizer, 200, seed=0)
    assert len(set(words)) == 200 and words == transfer_vocabulary(text_encoder.tokenizer, 200, seed=0)
    assert all(w.isalpha() and w.islower() and len(w) >= 3 for w in words)
    assert words != transfer_vocabulary(text_encoder.tokenizer, 200, seed=1)
    with pytest.raises(ValueError, match="transfer_words"):
        transfer_vocabulary(text_encoder.tokenizer, 10**6)

    config = get_config("tiny", transfer_words=64, students=("text",), methods=("labels", "soft"))
    data = prepare_data(config)
    teacher = build_teacher("fusion", config, data).eval()
    extra = transfer_columns(teacher, data)
    assert extra["teacher_logits"].shape == (64, data.num_classes) and (extra["label"] == -1).all()
    with torch.no_grad():  # the fusion teacher reads the word alone, its image dropped
        expected = teacher({"text_feat": data.signals["transfer_words"]["text_feat"]}, drop={"image_feat"})
    assert torch.allclose(extra["teacher_logits"], expected, atol=1e-5)
    sizes = []
    real_fit = exp.fit
    monkeypatch.setattr(exp, "fit", lambda model, train, *a, **k: sizes.append(train["label"].shape[0]) or real_fit(model, train, *a, **k))
    exp.run_seed(config, data, seed=0, read_test=False)
    n_labelled = int((data.train["label"] >= 0).sum())
    assert sizes == [n_labelled, data.train["label"].shape[0] + 64]  # the students (the teacher trains in recipes); labels only: no transfer rows
