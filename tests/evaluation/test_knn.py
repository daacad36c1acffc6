import pytest
import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict

from ssl_mae_plugin.evaluation import knn_classify
from ssl_mae_plugin.evaluation.knn import knn_predict_scores


def reference_knn(train_x, train_y, val_x, val_y, k, t, num_classes):
    """Per-sample weighted vote, written as plainly as possible."""
    train_x = F.normalize(train_x, dim=1)
    scores = []
    for x in F.normalize(val_x, dim=1):
        sims = [float(x @ row) for row in train_x]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * num_classes
        for i in order:
            votes[int(train_y[i])] += float(torch.tensor(sims[i] / t).exp())
        scores.append(votes)
    scores = torch.tensor(scores)
    top1 = top5 = 0
    for votes, label in zip(scores.tolist(), val_y.tolist(), strict=True):
        # rank classes by votes, ties to the lower class index
        ranked = sorted(range(num_classes), key=lambda c: (-votes[c], c))
        top1 += ranked[0] == label
        top5 += label in ranked[:5]
    return scores, top1 / len(val_y), top5 / len(val_y)


def _problem(seed=0, n_train=60, n_val=23, dim=8, num_classes=7):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g)
    train_y = torch.randint(0, num_classes, (n_train,), generator=g)
    val_y = torch.randint(0, num_classes, (n_val,), generator=g)
    train_x = centers[train_y] + 0.8 * torch.randn(n_train, dim, generator=g)
    val_x = centers[val_y] + 0.8 * torch.randn(n_val, dim, generator=g)
    return train_x, train_y, val_x, val_y


@pytest.mark.parametrize("k", [1, 5, 17, 60])
def test_matches_a_per_sample_reference_loop(k):
    train_x, train_y, val_x, val_y = _problem()
    ref_scores, ref_top1, ref_top5 = reference_knn(train_x, train_y, val_x, val_y, k, 0.1, 7)
    scores = knn_predict_scores(
        F.normalize(val_x, dim=1), F.normalize(train_x, dim=1), train_y, 7, k, 0.1
    )
    torch.testing.assert_close(scores, ref_scores, rtol=1e-4, atol=1e-4)
    out = knn_classify(train_x, train_y, val_x, val_y, k=k, temperature=0.1, num_classes=7)
    assert out["top1"] == pytest.approx(ref_top1)
    assert out["top5"] == pytest.approx(ref_top5)
    assert out["k"] == k and out["temperature"] == 0.1
    assert 0.0 < out["top1"] <= out["top5"] <= 1.0


def test_chunk_size_does_not_change_the_result():
    train_x, train_y, val_x, val_y = _problem(seed=1, n_val=50)
    results = [
        knn_classify(train_x, train_y, val_x, val_y, k=9, chunk_size=size)
        for size in (1, 7, 49, 50, 1000, None)
    ]
    assert all(r == results[0] for r in results)


def test_agrees_with_lightly_knn_predict():
    train_x, train_y, val_x, val_y = _problem(seed=2, n_val=40)
    ranking = knn_predict(
        F.normalize(val_x, dim=1), F.normalize(train_x, dim=1).T, train_y, 7, knn_k=11, knn_t=0.1
    )
    lightly_top1 = (ranking[:, 0] == val_y).float().mean().item()
    assert knn_classify(train_x, train_y, val_x, val_y, k=11)["top1"] == pytest.approx(lightly_top1)


def test_tied_votes_go_to_the_lower_class():
    # the query is exactly as similar to a (class 1) as to b (class 0)
    train_x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    train_y = torch.tensor([1, 0, 2])
    val_x = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    out = knn_classify(train_x, train_y, val_x, torch.tensor([0, 1]), k=2, num_classes=3)
    assert out["top1"] == 0.5  # class 0 wins the tie: first query right, second wrong


def test_duplicate_training_rows_tie_in_similarity_without_ambiguity():
    train_x, train_y, val_x, val_y = _problem(seed=3)
    dup_x, dup_y = torch.cat([train_x, train_x]), torch.cat([train_y, train_y])
    _, ref_top1, _ = reference_knn(dup_x, dup_y, val_x, val_y, 10, 0.1, 7)
    assert knn_classify(dup_x, dup_y, val_x, val_y, k=10)["top1"] == pytest.approx(ref_top1)


def test_well_separated_clusters_are_classified_perfectly():
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(4) * 10
    train_y, val_y = torch.arange(40) % 4, torch.arange(12) % 4
    train_x = centers[train_y] + torch.randn(40, 4, generator=g)
    val_x = centers[val_y] + torch.randn(12, 4, generator=g)
    out = knn_classify(train_x, train_y, val_x, val_y, k=5)
    assert out["top1"] == 1.0
    assert out["top5"] == 1.0  # fewer than 5 classes: top-5 counts every row


def test_k_larger_than_the_bank_is_clamped_with_a_warning_naming_k():
    train_x, train_y, val_x, val_y = _problem()
    with pytest.warns(UserWarning, match="k=200"):
        out = knn_classify(train_x, train_y, val_x, val_y, k=200)
    assert out["k"] == len(train_x)
    assert out == knn_classify(train_x, train_y, val_x, val_y, k=len(train_x))


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"k": 0}, "k"), ({"temperature": 0.0}, "temperature")]
)
def test_bad_arguments_are_value_errors_naming_them(kwargs, name):
    train_x, train_y, val_x, val_y = _problem()
    with pytest.raises(ValueError, match=name):
        knn_classify(train_x, train_y, val_x, val_y, **kwargs)


def test_mismatched_feature_dims_are_rejected():
    train_x, train_y, val_x, val_y = _problem()
    with pytest.raises(ValueError, match="dim"):
        knn_classify(train_x, train_y, val_x[:, :4], val_y)
