import pytest
import torch

from lightning_calib.rows import check_inputs, flatten, to_rows, valid_mask


def test_flatten_moves_class_dim_last():
    preds = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    target = torch.arange(8).view(2, 2, 2) % 3
    rows, t = flatten(preds, target)
    assert rows.shape == (8, 3) and t.shape == (8,)
    # row for image 1, pixel (0, 1) holds preds[1, :, 0, 1]
    assert torch.equal(rows[5], preds[1, :, 0, 1])
    assert t[5] == target[1, 0, 1]


def test_to_rows_drops_ignored_and_keeps_order():
    preds = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 3, 3))
    target[0, 1, 1] = 255
    target[1, 2, 0] = 255
    rows, t = to_rows(preds, target, ignore_index=255)
    assert rows.shape == (16, 4)
    full_rows, full_t = flatten(preds, target)
    keep = full_t != 255
    assert torch.equal(rows, full_rows[keep]) and torch.equal(t, full_t[keep])


def test_valid_mask_none_when_nothing_ignored():
    t = torch.tensor([0, 1, 2])
    assert valid_mask(t, None) is None
    assert valid_mask(t, -100) is None
    assert valid_mask(torch.tensor([0, -100]), -100).tolist() == [True, False]


def test_valid_mask_never_reads_device_memory_on_the_host():
    """Off the CPU the mask comes back unchecked: ``keep.all()`` would be a host sync (on a
    "meta" tensor, which has no data, reading it is an error: the test fails if it is read)."""
    t = torch.empty(6, dtype=torch.long, device="meta")
    keep = valid_mask(t, 255)
    assert keep is not None and keep.shape == (6,) and keep.dtype == torch.bool


@pytest.mark.parametrize(
    ("preds", "target", "kwargs", "match"),
    [
        (torch.randn(4), torch.zeros(4, dtype=torch.long), {}, r"shape \(N, C\)"),
        (torch.randn(4, 3), torch.zeros(5, dtype=torch.long), {}, r"must have shape \(4,\)"),
        (torch.randn(4, 3), torch.zeros(4), {}, "integer class indices"),
        (torch.ones(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long), {}, "floating"),
        (torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), {}, r"value 3; expected .*\[0, 3\)"),
        (torch.randn(4, 3), torch.tensor([0, -1, 2, 1]), {"ignore_index": 255}, "value -1"),
        (torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), {"num_classes": 5}, "num_classes=5"),
    ],
)
def test_check_inputs_errors(preds, target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_inputs(preds, target, **kwargs)


def test_ignore_index_outside_range_is_accepted():
    check_inputs(torch.randn(3, 2), torch.tensor([0, 255, 1]), ignore_index=255)
    rows, t = to_rows(torch.randn(3, 2), torch.tensor([255, 255, 255]), ignore_index=255)
    assert rows.shape == (0, 2) and t.shape == (0,)


def test_bad_value_is_found_behind_the_ignore_index():
    target = torch.tensor([0, 255, 12, 1])
    with pytest.raises(ValueError, match=r"value 12; expected class indices in \[0, 10\)"):
        check_inputs(torch.randn(4, 10), target, ignore_index=255)
    with pytest.raises(ValueError, match="value 255"):
        check_inputs(torch.randn(4, 10), target.clamp(max=255), ignore_index=None)
