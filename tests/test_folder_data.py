"""Training on a folder of image files (``ImageFolderDataModule``), predicting on a folder of files (``predict_dir``),
and MNIST's own files read as they are: scikit-learn's real digits written as PNG files train as the digits config
does; every bad input is one sentence."""

import csv
import gzip
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image, ImageDraw
from torchvision import transforms

from conftest import CONFIGS, quiet_trainer_args, run_cli
from formats import write_image_folder, write_mnist
from lit_tutorial.cli import make_cli
from lit_tutorial.data import DigitsDataModule, ImageFolderDataModule, MNISTDataModule, image_files
from lit_tutorial.data.folder import cache_dir
from lit_tutorial.errors import UserError

FOLDER10 = ["--config", str(CONFIGS / "step10_folder.yaml")]
FOLDER9 = ["--config", str(CONFIGS / "step9_folder.yaml")]
DIGITS = ["--config", str(CONFIGS / "step10_digits.yaml")]
QUICK_EPOCHS = 3  # the default run's; the slow comparison trains the configs' full 15 epochs


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lit_tutorial: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def digits_folders(tmp_path_factory) -> Path:
    """The digits' own train (1,437) and test (360) images, exactly as ``DigitsDataModule`` makes them (20x20
    centred in 28x28), as grey PNG files ``train/<digit>/<n>.png`` and ``test/<digit>/<n>.png``."""
    root = tmp_path_factory.mktemp("digits_png")
    digits = DigitsDataModule()
    write_image_folder(root / "train", *digits.load(train=True))
    write_image_folder(root / "test", *digits.load(train=False))
    return root


def _folder_args(digits_folders: Path) -> list[str]:
    # The digits' own test set as test_root and its 180-image validation count: the same split as the digits config.
    return [f"--data.init_args.root={digits_folders / 'train'}",
            f"--data.init_args.test_root={digits_folders / 'test'}", "--data.init_args.val_size=180"]


def _fit_and_test(args: list[str], root: Path, epochs: int) -> float:
    cli = make_cli([*args, f"--trainer.max_epochs={epochs}", "--trainer.logger=false", *quiet_trainer_args(root)],
                   run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    (results,) = cli.trainer.test(cli.model, cli.datamodule, ckpt_path="last", verbose=False)
    return results["test_acc"]


@pytest.fixture(scope="module")
def quick_runs(digits_folders, tmp_path_factory) -> dict[str, float]:
    """Both configs trained ``QUICK_EPOCHS`` epochs: their test accuracy and run folders."""
    runs = tmp_path_factory.mktemp("runs")
    return {"digits": _fit_and_test(DIGITS, runs / "digits", QUICK_EPOCHS),
            "folder": _fit_and_test([*FOLDER10, *_folder_args(digits_folders)], runs / "folder", QUICK_EPOCHS),
            "runs": runs}


# --- the same pictures, the same training -----------------------------------------------------------------------
def test_a_folder_of_png_files_reads_the_digits_pixel_for_pixel(digits_folders):
    folder = ImageFolderDataModule(str(digits_folders / "train"), test_root=str(digits_folders / "test"),
                                   channels=1, size=28)
    assert folder.class_names == tuple("0123456789")  # known right after __init__, for the CLI's link
    digits = DigitsDataModule()
    for train in (True, False):
        images, labels = digits.load(train)
        order = torch.argsort(labels, stable=True)  # files sort by class folder, then by their position
        got_images, got_labels = folder.load(train)
        assert torch.equal(got_labels, labels[order]) and torch.equal(got_images, images[order])
        assert got_images.dtype == torch.uint8 and got_images.shape[1:] == (1, 28, 28)


def test_the_folder_config_learns_the_digits_in_a_few_epochs(quick_runs):
    """The same images, but not the same order: files sort by class, so the seeded validation split and each
    epoch's shuffle pick other images than the digits config's, as another seed would. After a few epochs that
    difference shows; the full-length runs end within one point (the slow test below)."""
    assert quick_runs["digits"] >= 0.9 and quick_runs["folder"] >= 0.9, quick_runs


@pytest.mark.slow
def test_the_folder_config_trains_like_the_digits_config_full_length(digits_folders, tmp_path):
    digits = _fit_and_test(DIGITS, tmp_path / "digits", 15)
    folder = _fit_and_test([*FOLDER10, *_folder_args(digits_folders)], tmp_path / "folder", 15)
    assert digits >= 0.97 and abs(folder - digits) <= 0.01, (digits, folder)


# --- predicting on the user's own pictures ----------------------------------------------------------------------
def _draw_digit(digit: int, path: Path) -> None:
    """A dark digit on white paper, drawn in the middle 20/28 of the picture as MNIST's are."""
    image = Image.new("L", (280, 280), 255)
    draw = ImageDraw.Draw(image)
    if digit == 0:
        draw.ellipse((85, 45, 195, 235), outline=0, width=26)
    elif digit == 1:
        draw.line((140, 45, 140, 235), fill=0, width=26)
    elif digit == 7:
        draw.line((80, 55, 200, 55), fill=0, width=26)
        draw.line((200, 55, 115, 235), fill=0, width=26)
    image.convert("RGB").save(path)  # a colour file: predict converts it to grey as the training images are


def _predictions(run: Path) -> list[dict]:
    (found,) = run.rglob("predictions.csv")
    return list(csv.DictReader(found.open()))


def test_digits_drawn_dark_on_white_are_inverted_and_recognised(quick_runs, tmp_path):
    pictures = tmp_path / "my_pictures"
    (pictures / "more").mkdir(parents=True)
    drawn = {pictures / "zero.png": 0, pictures / "more" / "one.jpg": 1, pictures / "seven.png": 7}
    for path, digit in drawn.items():
        _draw_digit(digit, path)
    (pictures / "notes.txt").write_text("not an image: not listed")
    checkpoint = next((quick_runs["runs"] / "digits" / "checkpoints").glob("last.ckpt"))
    code, _ = run_cli(["predict", *DIGITS, "--ckpt_path", str(checkpoint), f"--data.init_args.predict_dir={pictures}",
                       *quiet_trainer_args(tmp_path / "predict")])
    assert code == 0
    files = image_files.list_images(pictures)  # predict_files: the index of each row; a folder's files first
    assert files == [pictures / "seven.png", pictures / "zero.png", pictures / "more" / "one.jpg"]
    rows = _predictions(checkpoint.parent)
    assert [r["file"] for r in rows] == list(map(str, files)) and "label" not in rows[0]
    assert [r["predicted"] for r in rows] == [str(drawn[f]) for f in files]
    # auto inverted them: light strokes on a dark border, as the digits were trained.
    one = image_files.read_image(files[2], 1, (28, 28), "auto")
    assert one[0, 0].max() <= 2 and one.max() >= 250 and not image_files.light_background(one)  # JPEG: nearly
    assert torch.equal(image_files.read_image(files[2], 1, (28, 28), False), 255 - one)


def test_predict_needs_neither_the_training_images_nor_their_statistics_cache(quick_runs, digits_folders, tmp_path,
                                                                            monkeypatch):
    """The folder config computes ``mean: auto``: a checkpoint carries the numbers, so predicting on files works
    with the cache deleted, and reads only the pictures it classifies."""
    run = quick_runs["runs"] / "folder"
    shutil.rmtree(cache_dir(digits_folders / "train"))
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    _draw_digit(0, pictures / "a.png")
    _draw_digit(7, pictures / "b.png")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(Path(path)) or real_open(path, *a, **k))
    code, err = run_cli(["predict", *FOLDER10, *_folder_args(digits_folders), "--data.init_args.invert=auto",
                         "--ckpt_path", "last", f"--data.init_args.predict_dir={pictures}",
                         *quiet_trainer_args(run)])
    assert code == 0, err
    assert opened == [pictures / "a.png", pictures / "b.png"]
    assert not cache_dir(digits_folders / "train").exists()
    assert [r["predicted"] for r in _predictions(run / "checkpoints" / "last-predict")] == ["0", "7"]


def test_predict_dir_converts_files_to_the_training_images_shape(tiny_vision_root, tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.new("RGBA", (50, 40), (255, 0, 0, 128)).save(pictures / "wide.png")
    Image.new("P", (30, 90)).save(pictures / "tall.gif")  # GIF is not among torchvision's extensions: not listed
    Image.new("L", (60, 60), 200).save(pictures / "grey.bmp")
    (pictures / "._grey.bmp").write_bytes(b"\x00\x05\x16\x07")  # macOS's hidden companion file: not listed
    datamodule = MNISTDataModule(str(tiny_vision_root), download=False, predict_dir=str(pictures), invert=False)
    datamodule.setup("predict")
    images = datamodule.splits["predict"][0]
    assert datamodule.predict_files == [pictures / "grey.bmp", pictures / "wide.png"]
    assert images.shape == (2, 1, 28, 28) and images.dtype == torch.uint8
    assert images[0].unique().tolist() == [200] and images[1].unique().tolist() == [76]  # L of pure red
    ((images, index),) = list(datamodule.predict_dataloader())  # no labels: (images, index)
    assert index.tolist() == [0, 1]


# --- colour JPEG files, fit, test and predict ---------------------------------------------------------------------
@pytest.fixture
def jpeg_folder(tmp_path) -> Path:
    """30 colour JPEG pictures of various sizes in 10 class folders, one grey and one PNG among them."""
    generator = torch.Generator().manual_seed(0)
    root = tmp_path / "my_images"
    for n in range(30):
        folder = root / f"class_{n % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (36 + n, 48, 3), dtype=torch.uint8, generator=generator).numpy()
        Image.fromarray(pixels).save(folder / f"{n}.JPG", quality=80)
    Image.fromarray(pixels[:, :, 0]).save(root / "class_0" / "grey.jpeg")
    Image.fromarray(pixels).save(root / "class_1" / "lossless.png")
    return root


def test_rgb_folder_equals_torchvisions_image_folder_with_resize_and_center_crop(jpeg_folder):
    images, labels, names = ImageFolderDataModule(str(jpeg_folder), channels=3, size=32).decoded(jpeg_folder)
    # Built after the cache was written: the cache lies beside the folder, where ImageFolder sees no extra class.
    reference = torchvision.datasets.ImageFolder(str(jpeg_folder), transform=transforms.Compose(
        [transforms.Resize(32), transforms.CenterCrop(32), transforms.PILToTensor()]))
    assert names == [Path(path).relative_to(jpeg_folder).as_posix() for path, _ in reference.samples]
    assert torch.equal(labels, torch.tensor(reference.targets))
    assert torch.equal(images, torch.stack([image for image, _ in reference]))


def test_size_height_width_keeps_the_aspect_ratio_and_crops_the_middle(tmp_path):
    picture = tmp_path / "stripes.png"
    pixels = torch.zeros(40, 100, dtype=torch.uint8)
    pixels[:, 40:60] = 255  # a white band in the middle third
    Image.fromarray(pixels.numpy()).save(picture)
    image = image_files.read_image(picture, 1, (20, 10))  # covers 20x10 at 20x50, then the middle 10 columns
    assert image.shape == (1, 20, 10) and image.min() > 200  # all band (antialiasing softens its edges)
    image = image_files.read_image(picture, 1, (10, 50))  # 20x50 again, then the middle 10 rows
    assert image.shape == (1, 10, 50) and image[0, :, 22:28].min() == 255 and image[0, :, :18].max() == 0


def test_rgb_jpeg_folder_fits_tests_and_predicts_through_the_cli(jpeg_folder, tmp_path):
    args = [*FOLDER9, f"--data.init_args.root={jpeg_folder}", *quiet_trainer_args(tmp_path / "run")]
    assert run_cli(["fit", *args, "--trainer.max_epochs=1"])[0] == 0
    assert run_cli(["test", *args, "--ckpt_path", "best"])[0] == 0
    assert {p.name for p in (tmp_path / "run").rglob("*.png")} == {"confusion_matrix.png", "test_samples.png"}
    assert run_cli(["predict", *args, "--ckpt_path", "last"])[0] == 0
    rows = _predictions(tmp_path / "run" / "checkpoints" / "last-predict")
    assert len(rows) == 6 and all(r["label"].startswith("class_") for r in rows)  # 0.2 of 32 images
    assert run_cli(["predict", *args, "--ckpt_path", "last", f"--data.init_args.predict_dir={jpeg_folder}"])[0] == 0
    rows = _predictions(tmp_path / "run" / "checkpoints" / "last-predict-2")
    assert len(rows) == 32 and all(r["predicted"].startswith("class_") for r in rows)


# --- the cache ----------------------------------------------------------------------------------------------------
@pytest.fixture
def count_opens(monkeypatch):
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    return opened


def test_the_cache_follows_the_files_and_the_settings(jpeg_folder, count_opens):
    def load(**settings) -> tuple[torch.Tensor, torch.Tensor]:
        count_opens.clear()
        return ImageFolderDataModule(str(jpeg_folder), **{"channels": 3, "size": 32, **settings}).load(train=True)

    first = load()
    assert len(count_opens) == 32 and len(list(cache_dir(jpeg_folder).glob("images_*.pt"))) == 1
    again = load()
    assert count_opens == [] and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    os.utime(jpeg_folder / "class_3" / "3.JPG", ns=(1, 1))  # touched: decoded again
    load()
    assert len(count_opens) == 32
    shutil.copy(jpeg_folder / "class_3" / "3.JPG", jpeg_folder / "class_3" / "added.jpg")
    load()
    assert len(count_opens) == 33
    (jpeg_folder / "class_3" / "added.jpg").unlink()
    load()
    assert len(count_opens) == 32
    grey = load(channels=1)
    assert len(count_opens) == 32 and grey[0].shape[1:] == (1, 32, 32)
    load(size=16)
    assert len(count_opens) == 32
    load(channels=1)
    assert count_opens == []  # each setting keeps its own cache (the latest of its files)
    assert len(list(cache_dir(jpeg_folder).glob("images_*.pt"))) == 3


def test_a_read_only_folder_is_decoded_without_a_cache(jpeg_folder, count_opens, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("lit_tutorial.data.folder.atomic_write", read_only)
    for _ in range(2):
        images, _ = ImageFolderDataModule(str(jpeg_folder), size=32).load(train=True)
    assert len(count_opens) == 64 and not cache_dir(jpeg_folder).exists() and len(images) == 26


# --- bad input: one sentence each --------------------------------------------------------------------------------
def _tiny_folder(root: Path, classes: int = 2, per_class: int = 3) -> Path:
    images = torch.randint(0, 256, (classes * per_class, 1, 28, 28), dtype=torch.uint8)
    write_image_folder(root, images, torch.arange(classes * per_class) % classes)
    return root


def _make_missing(root: Path) -> str:
    return f"data.root {root} does not exist"


def _make_empty(root: Path) -> str:
    root.mkdir()
    return f"data.root {root} holds no class folder; a classifier needs one sub-folder of images per class"


def _make_one_class(root: Path) -> str:
    _tiny_folder(root)
    shutil.rmtree(root / "1")
    return f"data.root {root} holds only one class folder (0)"


def _make_class_without_images(root: Path) -> str:
    _tiny_folder(root)
    (root / "2").mkdir()
    (root / "2" / "readme.txt").write_text("no pictures")
    return f"class folder {root / '2'} holds no image files (.jpg .jpeg .png"


def _make_truncated(root: Path) -> str:
    _tiny_folder(root)
    damaged = root / "1" / "00003.png"
    damaged.write_bytes(damaged.read_bytes()[:60])
    return f"cannot read {damaged} as an image ("


def _make_not_an_image(root: Path) -> str:
    _tiny_folder(root)
    (root / "0" / "notes.jpg").write_text("a text file with an image's name")
    return f"cannot read {root / '0' / 'notes.jpg'} as an image (cannot identify image file"


@pytest.mark.parametrize("make", [_make_missing, _make_empty, _make_one_class, _make_class_without_images,
                                  _make_truncated, _make_not_an_image], ids=lambda f: f.__name__[6:])
def test_each_bad_folder_is_one_sentence(make, tmp_path, capsys):
    root = tmp_path / "my_digits"
    expected = make(root)
    code, err = run_cli(["fit", *FOLDER10, f"--data.init_args.root={root}",
                         "--model.init_args.net.init_args.num_classes=2", "--trainer.fast_dev_run=true",
                         *quiet_trainer_args(tmp_path / "run")], capsys)
    line = _error_line(err)
    assert code == 2 and expected in line, line
    assert not (tmp_path / "run").exists()
    if "cannot read" in expected:
        assert "skip_unreadable: true" in line


def test_unreadable_files_can_be_skipped_and_are_listed(tmp_path):
    root = tmp_path / "my_digits"
    _make_truncated(root)
    (root / "0" / "notes.jpg").write_text("a text file with an image's name")
    with pytest.warns(UserWarning, match=r"skipped 2 image file\(s\) that cannot be read: .*notes\.jpg .*00003\.png"):
        datamodule = ImageFolderDataModule(str(root), channels=1, size=28, skip_unreadable=True, test_size=1)
        images, labels, names = datamodule.decoded(root)
    assert len(images) == 5 and "1/00003.png" not in names and "0/notes.jpg" not in names


def test_test_root_with_other_classes_and_bad_predict_dirs(tmp_path):
    root = _tiny_folder(tmp_path / "train", classes=3)
    other = _tiny_folder(tmp_path / "test", classes=2)
    with pytest.raises(UserError, match=r"data.test_root .* has the classes \['0', '1'\] but data.root has "
                                        r"\['0', '1', '2'\]; give both the same class folders\."):
        ImageFolderDataModule(str(root), test_root=str(other))
    empty = tmp_path / "nothing_here"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "a.txt").write_text("x")
    with pytest.raises(UserError, match=f"data.predict_dir {empty} holds no image files"):
        ImageFolderDataModule(str(root), predict_dir=str(empty)).setup("predict")
    with pytest.raises(UserError, match="data.predict_dir .*missing is not a folder"):
        ImageFolderDataModule(str(root), predict_dir=str(tmp_path / "missing")).setup("predict")
    (empty / "broken.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(UserError, match=f"cannot read {empty / 'broken.png'} as an image"):
        ImageFolderDataModule(str(root), predict_dir=str(empty)).setup("predict")
    with pytest.warns(UserWarning, match="skipped 1 image file"), pytest.raises(UserError, match="no image file that"):
        ImageFolderDataModule(str(root), predict_dir=str(empty), skip_unreadable=True).setup("predict")


# --- resuming on a changed folder ----------------------------------------------------------------------------------
def test_resuming_after_the_folder_changed_is_refused(tmp_path, capsys):
    root = _tiny_folder(tmp_path / "my_digits", classes=10, per_class=4)
    args = [*FOLDER10, f"--data.init_args.root={root}", "--data.init_args.val_size=4", "--data.init_args.test_size=4",
            *quiet_trainer_args(tmp_path / "run")]
    assert run_cli(["fit", *args, "--trainer.max_epochs=1"])[0] == 0
    # Copied elsewhere (every file with a new modification time): the same images, so the run goes on there.
    moved = tmp_path / "copied"
    shutil.copytree(root, moved, copy_function=shutil.copyfile)
    assert run_cli(["fit", *args, f"--data.init_args.root={moved}", "--trainer.max_epochs=2", "--ckpt_path",
                    "last"])[0] == 0
    changed = root / "3" / "00013.png"
    Image.new("L", (28, 28), 9).save(changed)
    code, err = run_cli(["fit", *args, "--trainer.max_epochs=3", "--ckpt_path", "last"], capsys)
    line = _error_line(err)
    assert code == 2 and f"the images in data.root {root} changed since the checkpoint was written" in line, line
    # An evaluation may use the changed folder.
    assert run_cli(["test", *args, "--ckpt_path", "last"])[0] == 0


# --- MNIST's own files --------------------------------------------------------------------------------------------
def _mnist_files(root: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 28, 28), dtype=torch.uint8, generator=generator)
    return write_mnist(root, (images, torch.arange(12) % 10), (images[:5], torch.arange(5)))


@pytest.mark.parametrize(("header", "expected"), [
    (struct.pack(">IIII", 0x0A0B0803, 12, 28, 28), "starts with 0x0a0b0803, not an IDX magic number"),
    (struct.pack(">IIII", 0x0D03, 12, 28, 28), "holds float32 values, not unsigned bytes"),
    (struct.pack(">III", 0x0802, 12, 28 * 28), "has 2 dimension(s) where an MNIST image file has 3"),
    (struct.pack(">IIII", 0x0803, 12, 14, 56), "holds 14x56 images, not MNIST's 28x28"),
    (struct.pack(">IIII", 0x0803, 13, 28, 28), "is corrupt or truncated (9408 bytes of data where its header "
                                                "announces 10192)"),
])
def test_mnist_idx_headers_are_checked(header, expected, tmp_path):
    raw = _mnist_files(tmp_path)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(header + images.read_bytes()[16:])
    with pytest.raises(UserError) as error:
        MNISTDataModule(str(tmp_path), download=False, val_size=2).setup("fit")
    assert str(error.value).startswith(f"MNIST file {images} {expected}")
    assert str(error.value).endswith("delete it and download the dataset again.")


def test_gzipped_mnist_in_a_read_only_folder_loads(tmp_path, monkeypatch):
    """Tests run as root, whom chmod does not stop: every file opened for writing under the data folder is refused
    here instead, as in a read-only folder (extracting the .gz files there used to fail, and called them unreadable
    archives)."""
    raw = _mnist_files(tmp_path / "data")
    expected = torchvision.datasets.MNIST(str(tmp_path / "data"), train=True)
    for path in raw.iterdir():
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(path.read_bytes())
        path.unlink()
    real_open = open

    def read_only_open(file, mode="r", *args, **kwargs):
        if str(file).startswith(str(tmp_path / "data")) and set(mode) & set("wax+"):
            raise PermissionError(13, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only_open)
    datamodule = MNISTDataModule(str(tmp_path / "data"), download=False, val_size=2)
    datamodule.prepare_data()
    datamodule.setup("fit")
    images, labels, _ = datamodule.splits["train"]
    assert torch.equal(images[:, 0], expected.data) and torch.equal(labels, expected.targets)
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{p}.gz" for p in ("t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"))


def test_an_archive_that_cannot_be_extracted_into_a_read_only_folder_is_not_called_damaged(tmp_path, monkeypatch):
    from lit_tutorial.data import CIFAR10DataModule

    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"placed by hand")

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / "cifar-10-batches-py"))

    monkeypatch.setattr("lit_tutorial.data.downloads.extract_archive", read_only)
    with pytest.raises(UserError, match=r"cannot extract .*cifar-10-python\.tar\.gz into .* \(.*Read-only file "
                                        r"system.*\); make that folder writable, or extract the archive yourself"):
        CIFAR10DataModule(str(tmp_path), download=False).prepare_data()
