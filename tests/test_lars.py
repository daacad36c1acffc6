import pytest
import torch

from ssl_mae_plugin.evaluation import LARS


def _params():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))  # ||w|| = 5
    bias = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    weight.grad = torch.tensor([[0.0, 0.5], [0.0, 0.0]])  # ||g|| = 0.5
    bias.grad = torch.tensor([0.2, 0.4])
    return weight, bias


def test_trust_ratio_applies_to_matrices_even_without_weight_decay():
    weight, bias = _params()
    w0, b0 = weight.detach().clone(), bias.detach().clone()
    opt = LARS([weight, bias], lr=2.0, weight_decay=0.0, momentum=0.9, trust_coefficient=0.001)
    opt.step()
    # 2-D: update scaled by 0.001 * ||w|| / ||g|| = 0.001 * 5 / 0.5 = 0.01
    expected_w = w0 - 2.0 * 0.01 * torch.tensor([[0.0, 0.5], [0.0, 0.0]])
    # 1-D: plain SGD, no trust ratio
    expected_b = b0 - 2.0 * torch.tensor([0.2, 0.4])
    torch.testing.assert_close(weight.detach(), expected_w)
    torch.testing.assert_close(bias.detach(), expected_b)


def test_weight_decay_only_on_matrices_and_inside_the_trust_ratio():
    weight, bias = _params()
    w0, b0 = weight.detach().clone(), bias.detach().clone()
    opt = LARS([weight, bias], lr=1.0, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    opt.step()
    update = torch.tensor([[0.0, 0.5], [0.0, 0.0]]) + 0.1 * w0  # [[0.3, 0.9], [0, 0]]
    ratio = 0.001 * 5.0 / float(torch.linalg.vector_norm(update))
    torch.testing.assert_close(weight.detach(), w0 - ratio * update)
    torch.testing.assert_close(bias.detach(), b0 - torch.tensor([0.2, 0.4]))


def test_momentum_accumulates_the_scaled_updates():
    weight = torch.nn.Parameter(torch.tensor([[1.0, 0.0]]))
    opt = LARS([weight], lr=1.0, momentum=0.9, trust_coefficient=0.5)
    weight.grad = torch.tensor([[0.0, 2.0]])
    opt.step()  # ratio 0.5 * 1 / 2 = 0.25 -> mu = [0, 0.5]
    torch.testing.assert_close(weight.detach(), torch.tensor([[1.0, -0.5]]))
    weight.grad = torch.tensor([[0.0, 2.0]])
    opt.step()  # ||w|| = sqrt(1.25); ratio = 0.5 * sqrt(1.25) / 2; mu = 0.9 * mu + ratio * g
    ratio = 0.5 * 1.25**0.5 / 2.0
    expected = torch.tensor([[1.0, -0.5 - (0.9 * 0.5 + ratio * 2.0)]])
    torch.testing.assert_close(weight.detach(), expected)


def test_zero_weight_or_zero_update_is_not_scaled():
    weight = torch.nn.Parameter(torch.zeros(2, 2))
    weight.grad = torch.ones(2, 2)
    LARS([weight], lr=0.1).step()
    torch.testing.assert_close(weight.detach(), torch.full((2, 2), -0.1))
    other = torch.nn.Parameter(torch.ones(2, 2))
    other.grad = torch.zeros(2, 2)
    LARS([other], lr=0.1).step()
    assert torch.isfinite(other).all() and torch.equal(other.detach(), torch.ones(2, 2))


def test_parameters_without_grad_are_skipped_and_closure_is_returned():
    weight, bias = _params()
    bias.grad = None
    b0 = bias.detach().clone()
    opt = LARS([weight, bias], lr=1.0)
    assert opt.step(lambda: 3.5) == 3.5
    assert torch.equal(bias.detach(), b0)


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"lr": -1.0}, "lr"), ({"momentum": 1.0}, "momentum")]
)
def test_bad_hyperparameters_are_value_errors_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LARS([torch.nn.Parameter(torch.ones(2, 2))], **kwargs)
