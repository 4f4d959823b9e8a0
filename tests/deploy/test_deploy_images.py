"""Decoding images to predict: every mode to RGB without saturation, EXIF orientation, failures by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vertebra.deploy.images import find_images, load_image
from vertebra.errors import DataError


def test_modes_become_rgb_like_the_training_decoder(tmp_path):
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([pixels, np.zeros((4, 6), np.uint8)]), mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(pixels[..., 1]).save(tmp_path / "grey.png")
    Image.fromarray(pixels).convert("P").save(tmp_path / "palette.png")

    rgb = load_image(tmp_path / "rgb.png")
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 4, 6)
    assert torch.equal(rgb, torch.from_numpy(pixels).permute(2, 0, 1))
    assert torch.equal(load_image(tmp_path / "rgba.png"), rgb)            # alpha dropped, colours kept
    grey = load_image(tmp_path / "grey.png")
    assert torch.equal(grey, torch.from_numpy(pixels[..., 1])[None].expand(3, -1, -1))
    expected = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    assert torch.equal(load_image(tmp_path / "palette.png"), torch.from_numpy(np.array(expected)).permute(2, 0, 1))


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    values = np.array([[0, 256, 0x8000, 0xFFFF]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")        # really stored as 16 bits
    image = load_image(tmp_path / "deep.png")
    assert image[:, 0].tolist() == [[0, 1, 128, 255]] * 3                 # the high byte, not min(v, 255)


def test_exif_orientation_is_honoured(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255                                   # white stripe at the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6                                       # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.shape == (3, 40, 20)                      # displayed upright: taller than wide
    assert image[:, :10].float().mean() > 200 and image[:, -10:].float().mean() < 50   # stripe now on top


def test_corrupt_file_is_a_data_error_naming_it(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError, match="bad.png"):
        load_image(tmp_path / "bad.png")
    good = np.full((30, 30, 3), 7, np.uint8)
    Image.fromarray(good).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])           # truncated mid-stream
    with pytest.raises(DataError, match="cut.png"):
        load_image(tmp_path / "cut.png")


def test_find_images_walks_folders_skips_non_images_and_keeps_named_files(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for name in ("a/x.png", "a/sub/y.jpg", "a/z.JPG"):
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG" if name.endswith("png") else "JPEG")
    (tmp_path / "a" / "README.md").write_text("skip me")
    (tmp_path / "odd.data").write_bytes(b"named explicitly: taken, and reported if unreadable")
    found = find_images([tmp_path / "a", tmp_path / "odd.data", tmp_path / "a" / "x.png"])
    assert [s.name for s in found] == ["sub/y.jpg", "x.png", "z.JPG", "odd.data"]   # x.png only once


def test_clashing_names_become_paths_from_the_common_folder(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / folder / "same.png")
    names = [s.name for s in find_images([tmp_path / "one", tmp_path / "two"])]
    assert names == ["one/same.png", "two/same.png"]


def test_missing_path_or_nothing_given_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_images([tmp_path / "nowhere"])
    with pytest.raises(DataError, match="no images"):
        find_images([])
