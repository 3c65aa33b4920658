"""Per-channel Hessians of depthwise convolutions against a brute-force loop over patches."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfmot_zip.core import MergeSide, apply_merge, extract_patches, invert_hessian
from tfmot_zip.core.depthwise import ChannelHessianAccumulator, channel_patches, invert_channel_hessians


def brute_force_channel_hessians(x, k, stride, padding):
    """Loops over samples, output positions and channels; pads like TensorFlow's 'same'."""
    n, h, w, c = x.shape
    if padding == "same":
        out_h, out_w = -(-h // stride), -(-w // stride)
        pad_h = max((out_h - 1) * stride + k - h, 0)
        pad_w = max((out_w - 1) * stride + k - w, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    else:
        out_h, out_w = (h - k) // stride + 1, (w - k) // stride + 1
    sums = np.zeros((c, k * k + 1, k * k + 1))
    count = 0
    for s in range(n):
        for i in range(out_h):
            for j in range(out_w):
                count += 1
                for ch in range(c):
                    patch = x[s, i * stride : i * stride + k, j * stride : j * stride + k, ch].reshape(-1)
                    v = np.append(patch, 1.0)
                    sums[ch] += np.outer(v, v)
    return sums / count


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3), size=st.integers(3, 7), channels=st.integers(1, 4), k=st.sampled_from([1, 2, 3]),
    stride=st.integers(1, 2), padding=st.sampled_from(["same", "valid"]), seed=st.integers(0, 1000),
    batches=st.integers(1, 3),
)
def test_channel_hessians_match_brute_force(n, size, channels, k, stride, padding, seed, batches):
    x = np.random.default_rng(seed).normal(size=(n * batches, size, size, channels))
    acc = ChannelHessianAccumulator(k * k, channels)
    for part in np.array_split(x, batches):  # streamed batch by batch
        rows = extract_patches(part, (k, k), (stride, stride), padding)
        acc.update(channel_patches(rows, k * k))
    np.testing.assert_allclose(acc.hessians(), brute_force_channel_hessians(x, k, stride, padding), atol=1e-10)


def test_dead_channel_gets_scaled_identity_and_live_ones_the_damped_inverse():
    live = np.array([[2.0, 0.5], [0.5, 1.0]])
    h = np.stack([live, np.zeros((2, 2))])
    inv = invert_channel_hessians(h, damping=1e-3)
    np.testing.assert_allclose(inv[0], invert_hessian(live, 1e-3))
    np.testing.assert_allclose(inv[1], np.eye(2) / 1.5)  # mean diagonal of the live channel


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 6), seed=st.integers(0, 1000))
def test_full_sharing_merge_is_the_hessian_weighted_mean(d, seed):
    """Sharing every coordinate: MTZ's update gives (H_a + H_b)^-1 (H_a a + H_b b), the minimiser of
    the two channels' quadratic errors."""
    rng = np.random.default_rng(seed)
    ma, mb = rng.normal(size=(2, d + 2, d))
    h_a, h_b = ma.T @ ma + 0.1 * np.eye(d), mb.T @ mb + 0.1 * np.eye(d)
    a, b = rng.normal(size=(2, d))
    side_a = MergeSide.from_hessian_inverse(a[None], np.linalg.inv(h_a), np.arange(d))
    side_b = MergeSide.from_hessian_inverse(b[None], np.linalg.inv(h_b), np.arange(d))
    new_a, new_b = apply_merge(side_a, side_b, [0], [0])
    expected = np.linalg.solve(h_a + h_b, h_a @ a + h_b @ b)
    np.testing.assert_allclose(new_a[0], expected, atol=1e-8)
    np.testing.assert_allclose(new_b[0], expected, atol=1e-8)


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros((1, 2, 3))])
def test_bad_shapes_are_refused(bad):
    with pytest.raises(ValueError, match="Expected"):
        if bad.ndim == 2:
            ChannelHessianAccumulator(2, 2).update(bad)
        else:
            invert_channel_hessians(bad)
