"""Image decoding shared by every data set: any Pillow mode becomes uint8 RGB without losing the
picture — 16-bit greyscale scaled to 8 bits (its high byte, as Pillow does for 16-bit RGB), not
saturated at 255."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vertebra.data import CocoDetection, ImageFolderClassification, MaskFolderSegmentation

RAMP = (np.arange(24 * 40, dtype=np.int64).reshape(24, 40) * 68).astype(np.uint16)  # 0 .. 65212


def _png16(path, array, color_type):
    """A 16-bit PNG written by hand (Pillow writes 16-bit greyscale only)."""
    height, width = array.shape[:2]
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _decoded(tmp_path, write):
    """The image ``write(path)`` produces, read back through all three data sets that decode."""
    for folder in ("cls/a", "masks"):
        (tmp_path / folder).mkdir(parents=True)
    write(tmp_path / "cls/a/x.png")
    Image.fromarray(np.zeros((24, 40), np.uint8)).save(tmp_path / "masks/x.png")
    (tmp_path / "instances.json").write_text(
        '{"images": [{"id": 1, "file_name": "x.png", "width": 40, "height": 24}], "annotations": [], '
        '"categories": [{"id": 1, "name": "a"}]}')
    images = [ImageFolderClassification(tmp_path / "cls")[0][0],
              MaskFolderSegmentation(tmp_path / "cls/a", tmp_path / "masks")[0][0],
              CocoDetection(tmp_path / "cls/a", tmp_path / "instances.json")[0][0]]
    for image in images:
        assert image.dtype == torch.uint8 and image.shape == (3, 24, 40)
        assert torch.equal(image, images[0])
    return images[0].numpy()


@pytest.mark.parametrize("save", [
    lambda path: Image.fromarray(RAMP).save(path),                  # Pillow mode I;16
    lambda path: _png16(path, RAMP, 0),                             # I;16, written by hand
    lambda path: Image.fromarray(RAMP.astype(np.int32)).save(path, format="TIFF"),  # mode I (32-bit)
], ids=["pillow-I;16", "png-16bit-grey", "tiff-I"])
def test_16_bit_greyscale_is_scaled_not_saturated(tmp_path, save):
    image = _decoded(tmp_path, save)
    assert (image == 255).mean() < 0.01  # was 99.7 % before
    expected = (RAMP >> 8).astype(np.int16)
    for channel in image:
        assert np.abs(channel.astype(np.int16) - expected).max() <= 1


def test_16_bit_grey_and_16_bit_rgb_agree(tmp_path):
    grey = _decoded(tmp_path / "grey", lambda path: _png16(path, RAMP, 0))
    rgb = _decoded(tmp_path / "rgb", lambda path: _png16(path, np.stack([RAMP] * 3, -1), 2))
    assert np.abs(grey.astype(np.int16) - rgb).max() <= 1


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "RGB"])
def test_8_bit_modes_decode_as_pillow_converts_them(tmp_path, mode):
    source = Image.fromarray((RAMP >> 8).astype(np.uint8)).convert("RGB").convert(mode)
    image = _decoded(tmp_path, source.save)
    assert np.array_equal(image.transpose(1, 2, 0), np.asarray(source.convert("RGB")))
