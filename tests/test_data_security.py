"""No code runs from a dataset file, nothing is written outside ``data.root``: crafted pickles and archives."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from miniatures import make_cifar10, make_imagenette
from torchvision.datasets.utils import calculate_md5

from bagoftricks.data import CIFAR10DataModule, ImagenetteDataModule, imagenette
from bagoftricks.data.pickles import load_data_pickle
from bagoftricks.errors import DataError

# --- pickles -------------------------------------------------------------------------------------


class Touch:
    """Unpickling this with plain pickle.load creates ``marker``: the proof that a file ran code."""

    def __init__(self, how: str, marker: Path) -> None:
        self.how, self.marker = how, marker

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch {self.marker}",)
        if self.how == "open":
            return open, (str(self.marker), "w")
        return Path.touch, (self.marker,)


def _payloads(marker: Path) -> dict[str, object]:
    return {
        "os.system": {"data": Touch("system", marker), "labels": [0]},
        "builtins.open": {"data": np.zeros((1, 3072), np.uint8), "labels": [Touch("open", marker)]},
        "pathlib": [Touch("touch", marker)],
        "object array": {"data": np.array([Touch("touch", marker)], dtype=object), "labels": [0]},
    }


@pytest.mark.parametrize("payload", ["os.system", "builtins.open", "pathlib", "object array"])
def test_crafted_pickle_runs_nothing(payload, tmp_path):
    marker = tmp_path / "pwned"
    file = tmp_path / "data_batch_1"
    file.write_bytes(pickle.dumps(_payloads(marker)[payload], protocol=2))
    with pytest.raises(DataError, match=f"^{file} was refused: it is not a plain-data dataset pickle") as info:
        load_data_pickle(file)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_crafted_cifar_batch_is_refused_at_setup(tmp_path):
    root = make_cifar10(tmp_path / "data")
    marker = tmp_path / "pwned"
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({"data": Touch("system", marker), "labels": [0]}, protocol=2))
    dm = CIFAR10DataModule(root, val_size=10, num_workers=0)
    with pytest.raises(DataError, match=f"{batch} was refused"):
        dm.setup("fit")
    assert not marker.exists()


def test_python2_numpy_module_path_still_loads(tmp_path):
    """The genuine files were written by Python 2 with numpy 1, whose arrays name numpy.core.multiarray."""
    data = np.arange(12, dtype=np.uint8).reshape(2, 6)
    stream = pickle.dumps({"data": data, "labels": [1, 2]}, protocol=2)
    old = stream.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != stream
    file = tmp_path / "batch"
    file.write_bytes(old)
    entry = load_data_pickle(file)
    assert np.array_equal(entry["data"], data) and entry["labels"] == [1, 2]


@pytest.mark.parametrize("content", [b"", b"\x80\x02}q\x00(X\x04\x00\x00\x00data", b"not a pickle"])
def test_truncated_or_foreign_pickle_is_one_sentence(content, tmp_path):
    file = tmp_path / "test_batch"
    file.write_bytes(content)
    with pytest.raises(DataError, match=f"^{file} was refused"):
        load_data_pickle(file)


# --- archives ------------------------------------------------------------------------------------


def _member(name: str, kind: str, target: str = "") -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    if kind == "file":
        info.size = 4
        return info, io.BytesIO(b"evil")
    info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                 "chardev": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]  # fmt: skip
    info.linkname = target
    return info, None


def _chain() -> list[tuple[str, str, str]]:
    """The published CVE-2025-4517 shape: symlinks through folders with 247-character names until the
    resolved path passes PATH_MAX, where ``os.path.realpath`` stops resolving and tarfile's ``data``
    filter takes the link for an inside one; a file is then written through it. This Python (3.11.7)
    extracts it with the filter alone."""
    comp, steps, path, members = "d" * 247, "abcdefghijklmnop", "", []
    for step in steps:
        members += [(os.path.join(path, comp), "dir", ""), (os.path.join(path, step), "symlink", comp)]
        path = os.path.join(path, comp)
    link = os.path.join(*steps, "l" * 254)
    members += [(link, "symlink", "../" * len(steps)), ("escape", "symlink", link + "/../")]
    return [*members, ("escape/evil.txt", "file", "")]


UNSAFE = {
    "dotdot": [("../evil.txt", "file", "")],
    "absolute": [("/ABSOLUTE/evil.txt", "file", "")],
    "symlink out": [("imagenette2-160/escape", "symlink", "../../evil.txt")],
    "symlink inside": [("imagenette2-160/alias", "symlink", "train")],
    "symlink chain": _chain(),
    "hardlink": [("imagenette2-160/passwd", "hardlink", "/etc/passwd")],
    "hardlink out": [("imagenette2-160/up", "hardlink", "../evil.txt")],
    "device": [("imagenette2-160/tty", "chardev", "")],
    "fifo": [("imagenette2-160/pipe", "fifo", "")],
}


@pytest.mark.parametrize("kind", UNSAFE)
def test_unsafe_archive_is_refused_before_anything_is_written(kind, tmp_path, monkeypatch):
    template = make_imagenette(tmp_path / "template", "imagenette2-160", per_class=1)
    archive = tmp_path / "server" / "imagenette2-160.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(template / "imagenette2-160", arcname="imagenette2-160")  # the genuine files come first
        for name, member_kind, target in UNSAFE[kind]:
            name = name.replace("/ABSOLUTE", str(tmp_path))
            tar.addfile(*_member(name, member_kind, target))
    monkeypatch.setattr(imagenette, "BASE_URL", archive.parent.as_uri() + "/")
    monkeypatch.setitem(imagenette.KNOWN_MD5, "imagenette2-160", (calculate_md5(archive),))
    root = tmp_path / "a" / "b" / "data"
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(DataError, match=r"imagenette2-160.tgz was refused and removed: its member .* is unsafe") as info:
        ImagenetteDataModule(str(root), download=True).prepare_data()
    assert "\n" not in str(info.value)
    assert not list(tmp_path.rglob("evil.txt"))
    assert sorted(p.name for p in root.iterdir()) == []  # no dataset, no temp folder, archive removed
    written = {p for p in tmp_path.rglob("*")} - before
    assert written == {root, root.parent, root.parent.parent}, written  # only the folders of data.root itself
