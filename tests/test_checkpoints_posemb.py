"""Tests for vivit_adapter.checkpoints.posemb."""

import numpy as np
import pytest
import scipy.ndimage

from vivit_adapter.checkpoints import posemb


def _random(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_spatial_identity_when_grid_equal():
  pe = _random((1, 1 + 16, 8))
  np.testing.assert_array_equal(posemb.resize_spatial_posemb(pe, (4, 4), has_cls=True), pe)


def test_spatial_matches_scipy_zoom_and_keeps_cls():
  pe = _random((1, 1 + 9, 5))
  out = posemb.resize_spatial_posemb(pe, (5, 7), has_cls=True)
  assert out.shape == (1, 1 + 35, 5) and out.dtype == np.float32
  np.testing.assert_array_equal(out[:, 0], pe[:, 0])
  grid = pe[0, 1:].reshape(3, 3, 5).astype(np.float64)
  expected = scipy.ndimage.zoom(grid, (5 / 3, 7 / 3, 1), order=1)
  np.testing.assert_allclose(out[0, 1:].reshape(5, 7, 5), expected, atol=1e-5)


def test_spatial_linear_ramp_stays_a_ramp_non_square():
  rows, cols = np.meshgrid(np.arange(2.0), np.arange(6.0), indexing='ij')
  pe = np.stack([rows, cols, 3 * rows - cols], -1).reshape(1, 12, 3)  # grid (2, 6)
  out = posemb.resize_spatial_posemb(pe, (3, 11), has_cls=False, old_grid=(2, 6))
  r, c = np.meshgrid(np.linspace(0, 1, 3), np.linspace(0, 5, 11), indexing='ij')
  expected = np.stack([r, c, 3 * r - c], -1).reshape(1, 33, 3)
  np.testing.assert_allclose(out, expected, atol=1e-12)


def test_spatial_downsampling():
  pe = _random((1, 64, 4))
  out = posemb.resize_spatial_posemb(pe, (4, 4), has_cls=False)
  expected = scipy.ndimage.zoom(pe[0].reshape(8, 8, 4).astype(np.float64), (4 / 8, 4 / 8, 1),
                                order=1)
  np.testing.assert_allclose(out[0].reshape(4, 4, 4), expected, atol=1e-5)


def test_spatial_errors():
  with pytest.raises(ValueError, match='10 patch tokens do not form a square grid'):
    posemb.resize_spatial_posemb(_random((1, 11, 4)), (4, 4), has_cls=True)
  with pytest.raises(ValueError, match=r'old_grid \(2, 4\) has 8 patches but the embedding has 9'):
    posemb.resize_spatial_posemb(_random((1, 9, 4)), (4, 4), has_cls=False, old_grid=(2, 4))
  with pytest.raises(ValueError, match=r'shape \(1, tokens, width\), got \(9, 4\)'):
    posemb.resize_spatial_posemb(_random((9, 4)), (4, 4), has_cls=False)


def test_temporal_identity_and_interpolation():
  pe = _random((1, 1 + 4, 6))
  np.testing.assert_array_equal(posemb.interpolate_temporal_posemb(pe, 4, has_cls=True), pe)
  out = posemb.interpolate_temporal_posemb(pe, 8, has_cls=True)
  assert out.shape == (1, 9, 6)
  np.testing.assert_array_equal(out[:, 0], pe[:, 0])
  expected = scipy.ndimage.zoom(pe[0, 1:].astype(np.float64), (8 / 4, 1), order=1)
  np.testing.assert_allclose(out[0, 1:], expected, atol=1e-5)
  # Ends aligned: the first and last indices keep the trained embeddings.
  np.testing.assert_allclose(out[0, 1], pe[0, 1], atol=1e-6)
  np.testing.assert_allclose(out[0, -1], pe[0, -1], atol=1e-6)


def test_temporal_without_cls_is_a_ramp():
  ramp = np.arange(4.0)[None, :, None] * np.array([1.0, -2.0])  # (1, 4, 2)
  out = posemb.interpolate_temporal_posemb(ramp, 7, has_cls=False)
  np.testing.assert_allclose(out[0, :, 0], np.linspace(0, 3, 7))
  np.testing.assert_allclose(out[0, :, 1], -2 * np.linspace(0, 3, 7))


def test_temporal_errors():
  with pytest.raises(ValueError, match='Cannot resize an axis of length 4 to 0'):
    posemb.interpolate_temporal_posemb(_random((1, 4, 2)), 0, has_cls=False)
