"""DataModules on miniatures in the genuine layouts: download, verification, safe extraction, labels, cache."""

from __future__ import annotations

import csv
import dataclasses
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from miniatures import make_archive, make_cifar100, make_cub200, make_imagenette
from PIL import Image
from torchvision.datasets.utils import calculate_md5
from torchvision.transforms import v2

from bagoftricks.data import imagenette
from bagoftricks.data.cifar100 import CIFAR100DataModule
from bagoftricks.data.cub200 import CUB200DataModule
from bagoftricks.data.images import UnreadableImageError
from bagoftricks.errors import DataError
from bagoftricks.data.imagenette import ImagenetteDataModule, ImagewoofDataModule
from bagoftricks.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_PCA_EIGVAL,
    IMAGENET_PCA_EIGVEC,
    IMAGENET_STD,
    FastRandomResizedCrop,
    Lighting,
    ScaleNormalize,
    cifar_train_transform,
    eval_transform,
    preset_transforms,
    train_transform,
)

SIZE = 32  # image side the tests ask for: small, so every batch is cheap


@pytest.fixture(scope="session")
def templates(tmp_path_factory) -> Path:
    """Every miniature, built once; tests copy what they need."""
    root = tmp_path_factory.mktemp("templates")
    make_imagenette(root, "imagenette2-160", per_class=2)
    make_imagenette(root, "imagewoof2-320", per_class=1, val_per_class=1)
    make_cifar100(root, n_train=200, n_test=40)
    make_cub200(root, n_classes=3, per_class=4, train_per_class=2)
    return root


# The image-file datasets as the tests build them: the paper's ImageNet preset (whose evaluation
# resize the cache reproduces exactly), validation on the official split unless a test says otherwise.
FILES = {"batch_size": 4, "num_workers": 0, "image_size": SIZE, "augment": "imagenet", "val_fraction": 0}


@dataclass
class Case:
    name: str
    folder: str
    archive: str
    make_dm: Callable[..., object]
    serve: Callable[[pytest.MonkeyPatch, Path, tuple[str, ...]], None]  # point the module at a local archive


def _serve_fastai(monkeypatch, archive: Path, md5s: tuple[str, ...]) -> None:
    monkeypatch.setattr(imagenette, "BASE_URL", archive.parent.as_uri() + "/")
    monkeypatch.setitem(imagenette.KNOWN_MD5, archive.name.removesuffix(".tgz"), md5s)


def _serve_class(datamodule):
    def serve(monkeypatch, archive: Path, md5s: tuple[str, ...]) -> None:
        source = datamodule.source_type
        monkeypatch.setattr(source, "archive", dataclasses.replace(source.archive, url=archive.as_uri(), md5s=md5s))

    return serve


CASES = [
    Case(
        "imagenette",
        "imagenette2-160",
        "imagenette2-160.tgz",
        lambda root, **kw: ImagenetteDataModule(root, **{"size": "160px", **FILES, **kw}),
        _serve_fastai,
    ),
    Case(
        "imagewoof",
        "imagewoof2-320",
        "imagewoof2-320.tgz",
        lambda root, **kw: ImagewoofDataModule(root, **{"size": "320px", **FILES, **kw}),
        _serve_fastai,
    ),
    Case(
        "cifar100",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        lambda root, **kw: CIFAR100DataModule(root, val_size=100, batch_size=4, num_workers=0, **kw),
        _serve_class(CIFAR100DataModule),
    ),
    Case(
        "cub200",
        "CUB_200_2011",
        "CUB_200_2011.tgz",
        lambda root, **kw: CUB200DataModule(root, **{**FILES, "val_fraction": 0.5, "batch_size": 2, **kw}),
        _serve_class(CUB200DataModule),
    ),
]
BY_NAME = {case.name: case for case in CASES}


def served_archive(case: Case, templates: Path, tmp_path: Path) -> Path:
    return make_archive(templates / case.folder, tmp_path / "server" / case.archive)


def leftovers(root: Path) -> list[str]:
    """Names a failed or finished extraction must not leave behind."""
    return [p.name for p in root.iterdir() if ".extracting-" in p.name or p.name.endswith(".partial")]


def copy_template(templates: Path, folder: str, root: Path) -> Path:
    shutil.copytree(templates / folder, root / folder)
    return root


# --- download, verification, extraction ---------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_download_verify_extract_then_batches(case, templates, tmp_path, monkeypatch):
    archive = served_archive(case, templates, tmp_path)
    case.serve(monkeypatch, archive, (calculate_md5(archive),))
    root = tmp_path / "data"
    dm = case.make_dm(root, download=True)
    dm.prepare_data()
    assert (root / case.folder).is_dir()
    assert not (root / case.archive).exists() and not leftovers(root)

    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (loader.batch_size, 3, SIZE, SIZE) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < dm.num_classes
        assert torch.isfinite(x).all()

    # The extracted folder is used as it is, without download.
    again = case.make_dm(root, download=False)
    again.prepare_data()
    again.setup("fit")
    assert len(again.train_set) == len(dm.train_set) and len(again.val_set) == len(dm.val_set)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_missing_dataset_names_path_and_flag(case, tmp_path):
    dm = case.make_dm(tmp_path)
    for step in (dm.prepare_data, lambda: dm.setup("fit")):
        with pytest.raises(FileNotFoundError, match="--data.download true") as info:
            step()
        assert str(tmp_path / case.folder) in str(info.value)


@pytest.mark.parametrize("checksum", ["known", "override"])
def test_truncated_archive_is_removed(checksum, templates, tmp_path, monkeypatch):
    case = BY_NAME["cub200"]
    archive = served_archive(case, templates, tmp_path)
    full_md5 = calculate_md5(archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    case.serve(monkeypatch, archive, (full_md5,))
    root = tmp_path / "data"
    # "known": the checksum catches it; "override": a matching checksum, so extraction must catch it.
    md5 = calculate_md5(archive) if checksum == "override" else None
    message = "could not be extracted" if checksum == "override" else "truncated or corrupt"
    with pytest.raises(RuntimeError, match=message):
        case.make_dm(root, download=True, md5=md5).prepare_data()
    assert sorted(p.name for p in root.iterdir()) == []


def test_unknown_checksum_stops_then_override_accepts(templates, tmp_path, monkeypatch):
    case = BY_NAME["imagenette"]
    archive = served_archive(case, templates, tmp_path)
    md5 = calculate_md5(archive)
    case.serve(monkeypatch, archive, ("0" * 32,))
    root = tmp_path / "data"
    with pytest.raises(RuntimeError, match=f"MD5 {md5}.*--data.md5 {md5}"):
        case.make_dm(root, download=True).prepare_data()
    assert (root / case.archive).exists() and not (root / case.folder).exists()

    archive.unlink()  # the kept archive is used: no second download
    case.make_dm(root, download=True, md5=md5).prepare_data()
    assert (root / case.folder / "train").is_dir() and not (root / case.archive).exists()


def test_known_checksums_are_md5s():
    for folder, md5s in imagenette.KNOWN_MD5.items():
        assert md5s and all(len(m) == 32 and int(m, 16) >= 0 for m in md5s), folder
    assert {f"imagenette2{s}" for s in ("", "-320", "-160")} <= set(imagenette.KNOWN_MD5)


# --- labels and splits ---------------------------------------------------------------------------


def test_imagenette_labels_follow_sorted_wnids(templates, tmp_path):
    root = copy_template(templates, "imagenette2-160", tmp_path)
    dm = BY_NAME["imagenette"].make_dm(root)
    dm.setup("fit")
    assert dm.classes[0] == "tench" and len(dm.classes) == dm.num_classes == 10
    for dataset in (dm.train_set, dm.val_set):
        labels = [label for _, label in dataset.samples]
        assert labels == [dm.wnids.index(Path(p).parent.name) for p, _ in dataset.samples]
    assert dm.test_set is dm.val_set


@pytest.mark.parametrize("level", [5, 25, 50])
def test_noisy_labels_come_from_the_csv_column(level, templates, tmp_path):
    root = copy_template(templates, "imagenette2-160", tmp_path)
    dm = BY_NAME["imagenette"].make_dm(root, noisy_labels=level)
    dm.setup("fit")
    with open(root / "imagenette2-160" / "noisy_imagenette.csv", newline="") as f:
        column = {row["path"]: row[f"noisy_labels_{level}"] for row in csv.DictReader(f)}
    folder = root / "imagenette2-160"
    train = dm.train_set.samples
    expected = [dm.wnids.index(column[Path(p).relative_to(folder).as_posix()]) for p, _ in train]
    assert [label for _, label in train] == expected
    assert any(label != dm.wnids.index(Path(p).parent.name) for p, label in train)  # some labels are noisy
    assert all(label == dm.wnids.index(Path(p).parent.name) for p, label in dm.val_set.samples)  # val stays clean


def test_cifar_coarse_labels_and_seeded_split(tmp_path):
    root = make_cifar100(tmp_path, n_train=200, n_test=20)  # two images of every fine class
    coarse = CIFAR100DataModule(root, coarse=True, val_size=0, num_workers=0)
    assert coarse.num_classes == 20  # known before setup, for the CLI link
    coarse.setup("fit")
    with open(root / "cifar-100-python" / "train", "rb") as f:
        entry = pickle.load(f, encoding="latin1")  # the fixture we wrote ourselves
    assert coarse.train_set.labels.tolist() == entry["coarse_labels"]
    assert coarse.val_set is coarse.test_set and len(coarse.classes) == 20

    fine = [CIFAR100DataModule(root, val_size=100, split_seed=s, num_workers=0) for s in (0, 0, 1)]
    for dm in fine:
        dm.setup("fit")
    assert len(fine[0].train_set) == 100 and len(fine[0].val_set) == 100
    assert sorted(fine[0].val_set.labels.tolist()) == list(range(100))  # stratified: one of each class
    assert sorted(fine[0].train_set.labels.tolist() + fine[0].val_set.labels.tolist()) == sorted(entry["fine_labels"])
    assert torch.equal(fine[0].val_set.images, fine[1].val_set.images)
    assert not torch.equal(fine[0].val_set.images, fine[2].val_set.images)


def test_cifar_reduced_copy_with_wrong_keys_is_named(templates, tmp_path):
    root = copy_template(templates, "cifar-100-python", tmp_path)
    with open(root / "cifar-100-python" / "train", "wb") as f:
        pickle.dump({"data": [], "labels_typo": []}, f, protocol=2)
    with pytest.raises(DataError, match="cifar-100-python/train is not a CIFAR batch with 'data'"):
        CIFAR100DataModule(root, num_workers=0).setup("fit")


def test_cub_zero_based_labels_and_official_split(templates, tmp_path):
    root = copy_template(templates, "CUB_200_2011", tmp_path)
    official = CUB200DataModule(root, val_fraction=0, num_workers=0)
    official.setup("fit")
    assert len(official.train_set) == 6 and len(official.test_set) == 6 and official.val_set is official.test_set
    assert official.classes == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    for path, label in official.train_set.samples + official.test_set.samples:
        assert label == int(Path(path).parent.name[:3]) - 1
    assert sorted({label for _, label in official.train_set.samples}) == [0, 1, 2]

    held_out = CUB200DataModule(root, val_fraction=0.5, num_workers=0)
    held_out.setup("fit")
    assert len(held_out.val_set) == 3 and len(held_out.train_set) == 3  # one per class each
    assert {label for _, label in held_out.val_set.samples} == {0, 1, 2}


# --- bad input -----------------------------------------------------------------------------------


def _break_two_images(root: Path) -> list[Path]:
    """Truncate one training JPEG and overwrite another with text; return both."""
    first, second = sorted((root / "imagenette2-160" / "train").rglob("*.JPEG"))[:2]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    second.write_text("not a jpeg")
    return [first, second]


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_corrupt_image_is_named(cache, templates, tmp_path):
    root = copy_template(templates, "imagenette2-160", tmp_path)
    broken = _break_two_images(root)
    dm = BY_NAME["imagenette"].make_dm(root, cache=cache)
    with pytest.raises(UnreadableImageError, match="skip_corrupt") as info:
        dm.setup("fit")  # the cache decodes everything here; without it, the loader finds them
        for _ in dm.train_dataloader():
            pass
    assert any(str(path) in str(info.value) for path in broken)


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_skip_corrupt_skips_and_counts_once(cache, templates, tmp_path):
    root = copy_template(templates, "imagenette2-160", tmp_path)
    broken = _break_two_images(root)
    dm = BY_NAME["imagenette"].make_dm(root, cache=cache, skip_corrupt=True)
    with pytest.warns(UserWarning, match="Skipped 2 unreadable of 20 images") as record:
        dm.setup("fit")
    assert len(record) == 1 and str(broken[0]) in str(record[0].message)
    assert len(dm.train_set) == 18 and not {str(p) for p in broken} & {p for p, _ in dm.train_set.samples}
    assert sum(len(y) for _, y in dm.train_dataloader()) == 16  # the last short batch is dropped


# --- decoded cache -------------------------------------------------------------------------------


def test_cache_gives_the_same_eval_images_and_is_reused(templates, tmp_path):
    root = copy_template(templates, "imagenette2-160", tmp_path)
    batches = {}
    for cache in ("none", "memory", "disk"):
        dm = BY_NAME["imagenette"].make_dm(root, cache=cache)
        dm.setup("fit")
        stored = None if cache == "none" else dm.train_set.decoded[0].clone()
        batches[cache] = next(iter(dm.val_dataloader()))
        x, _ = next(iter(dm.train_dataloader()))
        assert x.shape == (4, 3, SIZE, SIZE)
        if stored is not None:
            assert torch.equal(dm.train_set.decoded[0], stored)  # augmentation never writes into the cache
    assert torch.equal(batches["none"][0], batches["memory"][0])
    assert torch.equal(batches["memory"][0], batches["disk"][0])
    assert torch.equal(batches["none"][1], batches["disk"][1])

    files = sorted((root / ".cache").iterdir())
    assert sorted(f.name.split(".", 1)[1] for f in files) == ["u8", "u8", "u8.index.npy", "u8.index.npy"]  # train, val
    stamps = [f.stat().st_mtime_ns for f in files]
    BY_NAME["imagenette"].make_dm(root, cache="disk").setup("fit")
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read back, not rebuilt


def test_disk_cache_in_worker_processes(templates, tmp_path):
    root = copy_template(templates, "imagenette2-160", tmp_path)
    dm = ImagenetteDataModule(root, batch_size=4, num_workers=1, image_size=SIZE, cache="disk")
    dm.setup("fit")  # decoded in a worker process
    decoded = dm.train_set.decoded
    first = decoded[0].clone()
    sent = pickle.loads(pickle.dumps(decoded))  # what a spawned worker receives: the path, not the pixels
    assert sent._buffer is None and torch.equal(sent[0], first)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, SIZE, SIZE) and y.dtype == torch.int64


# --- transforms ----------------------------------------------------------------------------------


def test_lighting_matches_the_alexnet_formula():
    image = torch.rand(3, 8, 8)
    out = Lighting(0.1, generator=torch.Generator().manual_seed(3))(image)
    alpha = torch.randn(3, generator=torch.Generator().manual_seed(3)) * 0.1
    rgb = torch.tensor(IMAGENET_PCA_EIGVEC) @ (alpha * torch.tensor(IMAGENET_PCA_EIGVAL))
    assert torch.allclose(out, image + rgb.view(3, 1, 1))
    # Column j of eigvec is the j-th principal direction: the first one shifts all channels alike.
    assert torch.allclose(out - image, (out - image)[:, :1, :1].expand(3, 8, 8))
    with pytest.raises(TypeError, match="float images"):
        Lighting(0.1)(torch.zeros(3, 4, 4, dtype=torch.uint8))


@pytest.mark.parametrize("auto_augment", [None, "autoaugment", "randaugment", "trivialaugment"])
def test_presets_accept_pil_and_uint8_tensors(auto_augment):
    pil = Image.new("RGB", (50, 40), (120, 30, 200))
    tensor = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    train = train_transform(24, auto_augment=auto_augment)
    presets = [(train, 24), (eval_transform(24), 24), (cifar_train_transform(), 32)]
    for transform, side in presets:
        for image in (pil, tensor):
            out = transform(image)
            assert out.shape == (3, side, side) and out.dtype == torch.float32
    assert torch.equal(eval_transform(SIZE)(tensor), eval_transform(SIZE)(tensor))


def test_scale_normalize_equals_todtype_then_normalize():
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    fused = ScaleNormalize(IMAGENET_MEAN, IMAGENET_STD)
    uint8 = torch.randint(0, 256, (3, 9, 7), dtype=torch.uint8)
    assert torch.allclose(fused(uint8), reference(uint8), atol=1e-5)
    floats = torch.rand(3, 9, 7)
    before = floats.clone()
    assert torch.allclose(fused(floats), reference(floats), atol=1e-5)
    assert torch.equal(floats, before)  # out of place: cached pixels are never modified


def test_fast_random_resized_crop_matches_torchvision_distribution():
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)

    def boxes(crop, seed):
        torch.manual_seed(seed)
        return torch.tensor([list(crop.make_params([image]).values()) for _ in range(3000)], dtype=torch.float64)

    fast, reference = boxes(FastRandomResizedCrop(16), 0), boxes(v2.RandomResizedCrop(16), 0)
    assert torch.equal(fast, boxes(FastRandomResizedCrop(16), 0))  # seeded by torch's RNG
    top, left, height, width = fast.T
    assert (top >= 0).all() and (top + height <= 60).all() and (left >= 0).all() and (left + width <= 80).all()
    area = height * width / (60 * 80)
    assert area.min() >= 0.07 and (width / height).min() >= 0.7 and (width / height).max() <= 1.4
    # Same distribution: mean and spread of area, aspect and position agree with torchvision's draws.
    for ours, theirs in zip(_box_stats(fast), _box_stats(reference)):
        assert abs(ours - theirs) < 0.04, (ours, theirs)


def test_crop_scale_bounds_the_random_resized_crops_area():
    train_tf, _ = preset_transforms("imagenet", 16, crop_scale=(0.35, 1.0))
    crop = train_tf.transforms[0]
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    torch.manual_seed(0)
    area = torch.tensor([(p["height"] * p["width"]) / (60 * 80) for p in (crop.make_params([image]) for _ in range(2000))])
    assert crop.scale == (0.35, 1.0) and area.min() >= 0.34 and area.mean() > 0.5  # (0.08, 1): mean about 0.4


def _box_stats(boxes: torch.Tensor) -> list[float]:
    top, left, height, width = boxes.T
    area = height * width / (60 * 80)
    centre_y, centre_x = (top + height / 2) / 60, (left + width / 2) / 80
    return [area.mean(), area.std(), (width / height).log().mean(), centre_y.mean(), centre_x.mean()]
