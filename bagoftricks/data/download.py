"""Download, verify and safely extract a dataset archive, so no half-extracted folder is ever left.

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


class DataError(RuntimeError):
    """A problem with dataset files that the user can fix; the message says how."""


def missing_dataset_error(dataset: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{dataset} not found at {path}: pass --data.download true to download it, "
        f"or set --data.root to the folder that holds {path.name}."
    )


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
