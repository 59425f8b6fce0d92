"""Write tests/data/fixtures/torchvision_reference.pt: torchvision's outputs for the data tests' inputs.

    .venv/bin/python tests/data/make_torchvision_fixtures.py

The original OFA preprocesses PIL images with torchvision transforms; ``ofa_cn.data`` does the
same with PIL, numpy and torch alone, because torchvision cannot be installed beside the torch
CPU wheel the project uses. test_image.py and test_augment.py prove the two bit-identical by
comparing our outputs to the torchvision outputs stored here, so the tests themselves never
import torchvision. Only this script needs it (the file was written with torchvision
0.29.1+cu130, torch 2.14.1+cu130, Pillow 12.3.0 and numpy 1.26.4, also recorded in its ``versions``).

The inputs are not stored: the tests rebuild them from the same seeds (``_noise_image`` from
tests/data/conftest.py, imported from there below, and ``ramp_image``, copied in test_image.py).
Pixel outputs are stored as uint8 [H, W, 3], as ``np.asarray`` of the PIL image gives them; only
ToTensor and Normalize outputs are float32 [3, H, W]. Because ToTensor and Normalize act on each
value on its own, the ramp (every uint8 value in every channel) proves them on all inputs they can
see, and the tests may then rebuild torchvision's float pipelines from the stored uint8 images with
our ``to_tensor`` and ``normalize``.

File layout: ``{"versions": {package: version}, "cases": {case name: tensor}}``, loaded with
``torch.load(path, weights_only=True)``. The tests look the case names up literally, so a
renamed case must be renamed in both places. Rerunning the script writes the same bytes.
"""

from __future__ import annotations

import importlib.util
import logging
import random
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "fixtures" / "torchvision_reference.pt"

# imagenet_default_mean_and_std -> (mean, std), as ofa_cn.data.image.MEAN_STD (not imported, so the
# reference does not depend on the code under test).
MEAN_STD = {
    False: ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    True: ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# test_image.py: (width, height, size) of test_resize_square_is_bit_identical_to_torchvision, seed = width.
RESIZE_SQUARE_CASES = [(64, 48, 32), (20, 50, 48), (33, 33, 33)]
# test_augment.py: (width, height, size) of test_center_crop_matches_torchvision, seed 0. Offsets
# (W - size) / 2 that are whole, end in .5 (round half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2,
# 3.5 -> 4), pads by even and odd amounts, one side padded while the other is cropped, and no-ops.
CENTER_CROP_CASES = [
    (10, 8, 4), (5, 4, 4), (7, 4, 4), (9, 9, 4), (11, 8, 4), (4, 4, 4),
    (3, 2, 4), (2, 3, 5), (4, 9, 7), (13, 3, 6), (3, 13, 6), (1, 1, 3),
]


def _load_noise_image():
    """``_noise_image`` from tests/data/conftest.py, the function behind the tests' ``noise_image`` fixture."""
    spec = importlib.util.spec_from_file_location("_data_conftest", HERE / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._noise_image


def ramp_image() -> Image.Image:
    """16 x 16 RGB holding every uint8 value once per channel: R ramps up, G down, B is R transposed."""
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return Image.fromarray(np.stack([ramp, 255 - ramp, ramp.T], axis=-1), "RGB")


def _pixels(img: Image.Image) -> torch.Tensor:
    """PIL RGB image -> uint8 [H, W, 3]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))


def _ocr(img: Image.Image, resize_hw: tuple[int, int], padding_ltrb: tuple[int, int, int, int]) -> torch.Tensor:
    """The original OCR pipeline's pixels: F.resize bicubic, then F.pad edge. -> uint8 [size, size, 3]."""
    resized = TF.resize(img, list(resize_hw), interpolation=InterpolationMode.BICUBIC)
    return _pixels(TF.pad(resized, list(padding_ltrb), padding_mode="edge"))


def build_cases() -> dict[str, torch.Tensor]:
    noise_image = _load_noise_image()
    cases: dict[str, torch.Tensor] = {}

    # test_image.py: ToTensor and Normalize, float32 [3, H, W].
    for name, img in (("noise_13x9", noise_image(13, 9)), ("ramp_16x16", ramp_image())):
        tensor = TF.to_tensor(img)
        cases[f"to_tensor/{name}"] = tensor
        for imagenet, (mean, std) in MEAN_STD.items():
            cases[f"normalize/{name}/imagenet={imagenet}"] = TF.normalize(tensor, mean, std)

    # test_image.py: the caption pipeline's Resize((size, size), BICUBIC), before ToTensor.
    for width, height, size in RESIZE_SQUARE_CASES:
        resize = transforms.Resize((size, size), interpolation=InterpolationMode.BICUBIC)
        cases[f"resize_square/{width}x{height}_to_{size}"] = _pixels(resize(noise_image(width, height, seed=width)))

    # test_image.py: the OCR pipeline's pixels, before ToTensor. Padding is (left, top, right, bottom).
    cases["ocr/200x50_to_128"] = _ocr(noise_image(200, 50), (64, 128), (0, 32, 0, 32))
    cases["ocr/60x150_to_100"] = _ocr(noise_image(60, 150), (100, 64), (18, 0, 18, 0))
    top = random.Random(5).randint(0, 64)  # the training offset test_ocr_training_offset_comes_from_the_rng draws
    cases["ocr/300x120_to_128_rng5"] = _ocr(noise_image(300, 120), (64, 128), (0, top, 0, 64 - top))
    cases["ocr/160x120_to_128"] = _ocr(noise_image(160, 120), (96, 128), (0, 16, 0, 16))
    # These also prove F.resize(img, [h, w], BICUBIC), which RandomResize and the OCR document mode
    # call too, equal to PIL's img.resize((w, h), BICUBIC) at non-square sizes; the tests of those
    # two compare to PIL directly rather than store 110 KB and 360 KB more here.

    # test_augment.py: CenterCrop(size).
    for width, height, size in CENTER_CROP_CASES:
        cropped = transforms.CenterCrop(size)(noise_image(width, height))
        cases[f"center_crop/{width}x{height}_to_{size}"] = _pixels(cropped)
    return cases


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses.
    versions = {
        "torchvision": str(torchvision.__version__),
        "torch": str(torch.__version__),
        "pillow": str(PIL.__version__),
        "numpy": str(np.__version__),
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"versions": versions, "cases": build_cases()}, OUTPUT)
    logger.info("wrote %s (%d bytes) with %s", OUTPUT, OUTPUT.stat().st_size, versions)


if __name__ == "__main__":
    main()
