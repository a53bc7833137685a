"""Download, verify and safely extract a dataset archive, so no half-extracted folder is ever left.

:class:`DownloadableDataModule` is the DataModule side of it: a dataset that comes as one archive
declares its folder, url, checksums and layout check, and inherits ``prepare_data`` and the checks
``setup`` starts with.

Hand-written around torch/torchvision pieces because torchvision's ``download_and_extract_archive``
writes the archive in place, extracts without tarfile's safety filter, and accepts one checksum
only, while the fast.ai archives have been re-uploaded with new checksums more than once.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from torch.hub import download_url_to_file
from torchvision.datasets.utils import calculate_md5

from bagoftricks.data.base import ImageDataModule
from bagoftricks.errors import DataError


def missing_dataset_error(dataset: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{dataset} not found at {path}: pass --data.download true to download it, "
        f"or set --data.root to the folder that holds {path.name}."
    )


class DownloadableDataModule(ImageDataModule):
    """An :class:`ImageDataModule` whose images come from one archive extracted into ``root``.

    A subclass declares the archive, as class attributes or properties: ``folder`` (its top
    folder), ``url``, ``known_md5s`` (every published checksum), ``display_name`` (for error
    messages) and ``check_folder(path)``, which raises unless ``path`` has the extracted layout.
    Its ``__init__`` keeps every argument explicit, because the CLI reads it, and passes
    ``root``, ``download`` and ``md5`` (documented there) on to this one.
    """

    folder: str
    url: str
    known_md5s: Sequence[str]
    display_name: str

    def __init__(
        self,
        root: str,
        download: bool,
        md5: str | None,
        batch_size: int,
        num_workers: int | None,
        image_size: int,
        pin_memory: bool,
    ) -> None:
        super().__init__(batch_size, num_workers, image_size, pin_memory)
        self.root = Path(root).expanduser()
        self.download, self.md5 = download, md5

    def check_folder(self, path: Path) -> None:
        """Raise unless ``path`` holds the extracted archive's layout, naming what is missing and the fix."""
        raise NotImplementedError(f"{type(self).__name__} must say how to check its extracted folder.")

    def not_extracted_error(self, path: Path, problem: str) -> FileNotFoundError:
        """The error ``check_folder`` raises: ``problem`` says what ``path`` lacks, e.g. ``"has no train/ folder"``."""
        archive = Path(urlparse(self.url).path).name
        return FileNotFoundError(
            f"{path} {problem}, so it is not an extracted {archive}: "
            "delete it and pass --data.download true, or fix --data.root."
        )

    def prepare_data(self) -> None:
        prepare_dataset(
            self.root,
            self.folder,
            url=self.url,
            md5s=[self.md5] if self.md5 else self.known_md5s,
            download=self.download,
            check=self.check_folder,
            dataset=self.display_name,
        )

    def dataset_path(self) -> Path:
        """``root/folder`` once it is known to hold the dataset; the missing-dataset or layout error otherwise.

        ``setup`` starts here: it runs on every process, ``prepare_data`` on one per node only.
        """
        path = self.root / self.folder
        if not path.exists():
            raise missing_dataset_error(self.display_name, path)
        self.check_folder(path)
        return path


def prepare_dataset(
    root: str | Path,
    folder: str,
    *,
    url: str,
    md5s: Sequence[str],
    download: bool,
    check: Callable[[Path], None],
    dataset: str,
) -> Path:
    """Make sure ``root/folder`` holds the extracted dataset, downloading it if allowed.

    An existing folder is only checked for its structure (``check`` raises on a bad one), so a
    user's own or reduced copy in the genuine layout is used as it is. Otherwise the archive
    (``root/<name of the url>``, downloaded if absent) is verified against ``md5s`` (empty: not
    verified), extracted, checked and removed.
    """
    root = Path(root).expanduser()
    target = root / folder
    if target.exists():
        check(target)
        return target
    if not download:
        raise missing_dataset_error(dataset, target)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(urlparse(url).path).name
    if not archive.exists():
        # torch.hub writes to a temporary file beside the target and renames it when complete.
        download_url_to_file(url, str(archive), progress=True)
    verify_archive(archive, md5s)
    safe_extract(archive, root, folder)
    check(target)
    archive.unlink()
    return target


def verify_archive(archive: Path, md5s: Sequence[str]) -> None:
    """Raise unless the MD5 of ``archive`` is one of ``md5s``; a truncated or corrupt archive is removed."""
    if not md5s:
        warnings.warn(f"No known checksum for {archive.name}: it is extracted without verification.", stacklevel=2)
        return
    md5 = calculate_md5(archive)
    if md5 in md5s:
        return
    if not _is_readable_tar(archive):
        archive.unlink()
        raise DataError(
            f"{archive} is truncated or corrupt (MD5 {md5}) and was removed; run again to download it afresh."
        )
    # A complete archive with an unknown checksum: most likely re-uploaded upstream, so the user decides.
    raise DataError(
        f"{archive} has MD5 {md5}, which is none of the known checksums {list(md5s)}: if it is a new "
        f"upstream release you trust, pass --data.md5 {md5} to accept it, otherwise delete it and download again."
    )


def _is_readable_tar(archive: Path) -> bool:
    try:
        with tarfile.open(archive) as tar:
            for _ in tar:  # reading every header decompresses the whole stream
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error):
        return False
    return True


def safe_extract(archive: Path, root: Path, folder: str) -> None:
    """Extract ``archive`` into ``root`` via a temporary folder; ``root/folder`` appears only when complete.

    tarfile's ``data`` filter refuses members that would land outside the destination (absolute
    paths, ``..``, links pointing outside) and device files. A failed extraction removes the
    archive, since extracting it again would fail again.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.extracting-", dir=root))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / folder).is_dir():
            raise DataError(f"{archive} does not contain the folder {folder}/; it is not the expected archive.")
        # Other top-level entries first (CUB ships attributes.txt beside its folder), the dataset last.
        for entry in sorted(tmp.iterdir(), key=lambda p: p.name == folder):
            if not (root / entry.name).exists():
                entry.rename(root / entry.name)
    except tarfile.FilterError as e:
        archive.unlink()
        raise DataError(
            f"{archive} was refused and removed: its member {e.tarinfo.name!r} is unsafe ({e})."
        ) from e
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        archive.unlink(missing_ok=True)
        raise DataError(
            f"{archive} could not be extracted ({e}) and was removed; run again to download it afresh."
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
