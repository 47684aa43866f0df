import pytest
import torch

from localstdp.rules.association import balanced_onehot, make_associations, random_codes


@pytest.mark.parametrize("n,K", [(1, 2), (7, 2), (10, 10), (13, 4)])
def test_balanced_onehot_is_balanced(n, K):
    A = balanced_onehot(n, K)
    assert A.shape == (n, K)
    assert torch.equal(A.sum(1), torch.ones(n))
    counts = A.sum(0)
    assert counts.max() - counts.min() <= 1 and counts.sum() == n
    assert torch.equal(A.argmax(1), torch.arange(n) % K)


def test_random_codes_are_seeded_binary_and_informative():
    A1 = random_codes(200, 5, 0.5, torch.Generator().manual_seed(3))
    A2 = random_codes(200, 5, 0.5, torch.Generator().manual_seed(3))
    A3 = random_codes(200, 5, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(A1, A2) and not torch.equal(A1, A3)
    assert set(A1.unique().tolist()) <= {0.0, 1.0}
    rows = A1.sum(1)
    assert rows.min() >= 1 and rows.max() <= 4  # never all-0 or all-1
    assert 0.35 < A1.mean() < 0.65  # density respected


def test_output_layer_is_identity_and_widths_checked():
    maps = make_associations([8, 6, 3], 3, "onehot", 0.5, torch.Generator())
    assert torch.equal(maps[-1], torch.eye(3))
    assert [m.shape for m in maps] == [(8, 3), (6, 3), (3, 3)]
    with pytest.raises(ValueError, match="output layer"):
        make_associations([8, 4], 3, "onehot", 0.5, torch.Generator())
