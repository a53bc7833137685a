"""Download, verify and safely extract a dataset archive, so no half-extracted folder is ever left.

A dataset that comes as one archive declares an :class:`Archive` (its folder, url, checksums and
the files its extracted layout must hold); :func:`prepare_dataset` does the rest.

Hand-written around torch/torchvision pieces because torchvision's ``download_and_extract_archive``
writes the archive in place, extracts without checking members, and accepts one checksum only,
while the fast.ai archives have been re-uploaded with new checksums more than once.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

from torch.hub import download_url_to_file
from torchvision.datasets.utils import calculate_md5

from bagoftricks.errors import DataError, MissingDataError


@dataclass(frozen=True)
class Archive:
    """One downloadable dataset: ``url`` extracts to ``root/folder``, which then holds every path of ``layout``."""

    name: str  # for messages: "Imagenette"
    folder: str
    url: str
    md5s: tuple[str, ...]  # every published checksum of the archive
    layout: tuple[str, ...]  # paths relative to the folder that an extracted copy has

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name

    def check(self, path: Path) -> None:
        """Raise unless ``path`` has the extracted layout, naming what is missing and the fix."""
        missing = [name for name in self.layout if not (path / name).exists()]
        if missing:
            raise DataError(
                f"{path} lacks {missing}, so it is not an extracted {self.filename}: "
                "delete it and pass --data.download true, or fix --data.root."
            )

    def located(self, root: str | Path) -> Path:
        """``root/folder`` once it holds the dataset; the missing-dataset or layout error otherwise.

        ``setup`` starts here: it runs on every process, ``prepare_data`` on one per node only.
        """
        path = Path(root) / self.folder
        if not path.exists():
            raise MissingDataError(
                f"{self.name} not found at {path}: pass --data.download true to download it, "
                f"or set --data.root to the folder that holds {path.name}."
            )
        self.check(path)
        return path


def prepare_dataset(root: str | Path, archive: Archive, *, download: bool, md5: str | None = None) -> Path:
    """Make sure ``root/archive.folder`` holds the extracted dataset, downloading it if allowed.

    An existing folder is only checked for its structure, so a user's own or reduced copy in the
    genuine layout is used as it is. Otherwise the archive (``root/<name of the url>``, downloaded
    if absent) is verified against ``md5`` or the known checksums, extracted, checked and removed.
    """
    root = Path(root)
    target = root / archive.folder
    if target.exists() or not download:
        return archive.located(root)
    root.mkdir(parents=True, exist_ok=True)
    file = root / archive.filename
    if not file.exists():
        fetch(archive.url, file)
    verify_archive(file, [md5] if md5 else archive.md5s)
    safe_extract(file, root, archive.folder)
    archive.check(target)
    file.unlink()
    return target


def fetch(url: str, file: Path) -> None:
    """Download ``url`` to ``file``; on failure nothing is left at ``file`` and the message says how to place it by hand."""
    try:
        # torch.hub writes to a temporary file beside the target, renames it when complete and
        # removes it when the transfer fails, so a partial download never has the final name.
        download_url_to_file(url, str(file), progress=True)
    except (URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"Downloading {url} failed ({reason}): check the network, or download the file by hand, "
            f"place it at {file} and run again."
        ) from e


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


def unsafe_member(member: tarfile.TarInfo, dest: str) -> str | None:
    """Why ``member`` may not be extracted into the folder ``dest``, or None if it is a plain file or folder inside it.

    No dataset archive holds links or special files, so they are refused outright: tarfile's own
    ``data`` filter can be walked out of with a chain of symlinks (CVE-2025-4517) on Pythons
    without the mid-2025 security releases, and a refusal here does not depend on the version.
    """
    if member.issym() or member.islnk():
        return f"a link to {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return "a device, fifo or other special file"
    # With no link anywhere in the archive and a fresh destination, the lexical path is the real one.
    target = os.path.normpath(os.path.join(dest, member.name))
    if os.path.commonpath([target, dest]) != dest:
        return "a path outside the extraction folder"
    return None


def safe_extract(archive: Path, root: Path, folder: str) -> None:
    """Extract ``archive`` into ``root`` via a temporary folder; ``root/folder`` appears only when complete.

    Every member is checked (:func:`unsafe_member`) before anything is written, and tarfile's
    ``data`` filter still applies. A refused or failed archive is removed, since extracting it
    again would fail again.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.extracting-", dir=root))
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            dest = os.path.realpath(tmp)
            for member in members:
                why = unsafe_member(member, dest)
                if why is not None:
                    archive.unlink()
                    raise DataError(
                        f"{archive} was refused and removed: its member {member.name!r} is unsafe ({why}); "
                        "dataset archives hold only files and folders."
                    )
            tar.extractall(tmp, members=members, filter="data")
        if not (tmp / folder).is_dir():
            raise DataError(f"{archive} does not contain the folder {folder}/; it is not the expected archive.")
        # Other top-level entries first (CUB ships attributes.txt beside its folder), the dataset last.
        for entry in sorted(tmp.iterdir(), key=lambda p: p.name == folder):
            if not (root / entry.name).exists():
                entry.rename(root / entry.name)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        archive.unlink(missing_ok=True)
        raise DataError(
            f"{archive} could not be extracted ({e}) and was removed; run again to download it afresh."
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
