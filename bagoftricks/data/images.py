"""Image files on disk: decoding, the decoded cache and :class:`ImageFileDataset`, what every dataset of
image files (image folders, Imagenette, Imagewoof, CUB-200) is served by.

Decoding a JPEG is the slow part of an input pipeline on a small machine; with ``cache`` each image
is decoded and resized once into a uint8 store, and later epochs crop tensors from it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from bagoftricks.errors import ConfigError, DataError

# Decoding to ~8 px (libjpeg at 1/8 scale) still reads every byte of the file, so it finds broken
# files at a fraction of the cost of a full decode.
_SCAN_SIDE = 8


class UnreadableImageError(DataError):
    """An image file PIL cannot decode; the message names the file and what to do."""

    def __init__(self, message: str) -> None:
        # Raised in a loader worker, this error reaches the main process rebuilt by torch's
        # ExceptionWrapper from the worker's whole traceback text: keep only the original sentence.
        if message.startswith("Caught ") and "Original Traceback" in message:
            message = message.rstrip().rsplit(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


def decode_image(path: str, size: tuple[int, int] | None = None) -> Image.Image:
    """The image at ``path`` as RGB, resized to ``size`` (width, height) if given."""
    try:
        with Image.open(path) as img:
            if size is not None:
                img.draft("RGB", size)  # JPEG: libjpeg decodes at 1/2, 1/4 or 1/8 scale directly
            img = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImageError(
            f"Cannot read image {path} ({e}): replace or delete it, or set --data.skip_corrupt true to skip it."
        ) from e
    if size is not None and img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    return img


def available_memory() -> int:
    """Bytes of memory a new allocation can take without swapping (psutil's estimate; total RAM without it)."""
    try:
        import psutil  # a dependency of Lightning's, so nearly always there

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gigabytes(nbytes: int) -> str:
    return f"{nbytes / 1e9:.1f} GB"


def user_cache_folder() -> Path:
    """``$XDG_CACHE_HOME/bagoftricks`` (``~/.cache/bagoftricks``): the disk cache's place when the dataset's folder is read-only."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bagoftricks"


def writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (made if missing), tried rather than read from permissions,
    which a read-only mount or the root user would misreport."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def disk_cache_folder(root: Path, cache_dir: str | None) -> Path:
    """Where ``cache disk`` writes: ``cache_dir``, else ``root/.cache``, else (a read-only dataset folder, as on
    shared clusters) the user's cache folder; a ConfigError naming ``data.cache_dir`` if none is writable."""
    if cache_dir is not None:
        folder = Path(cache_dir).expanduser()
        if not writable(folder):
            raise ConfigError(f"data.cache_dir {folder} is not writable: set it to a folder you can write to, or use data.cache memory.")
        return folder
    beside, user = root / ".cache", user_cache_folder()
    if writable(beside):
        return beside
    if writable(user):
        rank_zero_info(f"{root} is read-only: the disk cache goes to {user} (data.cache_dir chooses another folder).")
        return user
    raise ConfigError(
        f"data.cache disk cannot write to {beside} (read-only) nor to {user}: set data.cache_dir to a writable folder, "
        "or use data.cache memory."
    )


def shorter_side_size(path: str, side: int) -> tuple[int, int] | None:
    """(width, height) with the shorter side scaled to ``side``, read from the header; None if unreadable."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if min(width, height) <= side:
        return width, height  # never upsampled: a 96-px copy is cached as it is, whatever the crop size
    # The rounding of v2.Resize(side), so evaluation from the cache equals evaluation from the file.
    if width <= height:
        return side, max(1, int(side * height / width))
    return max(1, int(side * width / height)), side


class _DecodeJob(Dataset):
    """Decodes image i to its cache size in a loader worker: ``(i, HWC uint8 array or None, error)``."""

    def __init__(self, paths: list[str], sizes: list[tuple[int, int] | None]) -> None:
        self.paths, self.sizes = paths, sizes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, np.asarray(decode_image(self.paths[i], self.sizes[i])), ""
        except UnreadableImageError as e:
            return i, None, str(e)


def _as_list(batch: list) -> list:
    return batch


def _decode_all(paths: list[str], sizes: list, num_workers: int):
    """Yield ``(i, array or None, error)`` for every image, decoded in ``num_workers`` processes."""
    loader = DataLoader(_DecodeJob(paths, sizes), batch_size=16, num_workers=num_workers, collate_fn=_as_list)
    for batch in loader:
        yield from batch


class DecodedImages:
    """Images decoded once, each HWC uint8, back to back in one flat buffer (a RAM tensor or a disk memmap).

    ``index[i] = (byte offset, height, width)``; height 0 marks an unreadable file.
    """

    def __init__(self, index: np.ndarray, buffer: torch.Tensor | None = None, file: Path | None = None) -> None:
        self.index, self._buffer, self.file = index, buffer, file

    def __getitem__(self, i: int) -> tv_tensors.Image:
        if self._buffer is None:
            # Opened in each loader worker: a memmap sent to a worker would be copied whole.
            self._buffer = torch.from_numpy(np.memmap(self.file, dtype=np.uint8, mode="c"))
        offset, height, width = (int(v) for v in self.index[i])
        pixels = self._buffer[offset : offset + height * width * 3]
        # CHW view of HWC memory: channels-last, the layout of torch's fast uint8 antialiased resize.
        return tv_tensors.Image(pixels.view(height, width, 3).permute(2, 0, 1))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.file is not None:
            state["_buffer"] = None
        return state

    def select(self, keep: list[int]) -> DecodedImages:
        return DecodedImages(self.index[keep], self._buffer, self.file)


def build_decoded(
    paths: list[str], side: int, num_workers: int, file: Path | None = None, skip_corrupt: bool = False
) -> DecodedImages:
    """Decode every image once with its shorter side resized to ``side``, into RAM (``file=None``) or ``file``."""
    sizes = [shorter_side_size(p, side) for p in paths]
    index = np.zeros((len(paths), 3), dtype=np.int64)
    index[:, 1:] = [(0, 0) if s is None else (s[1], s[0]) for s in sizes]
    nbytes = index[:, 1] * index[:, 2] * 3
    index[1:, 0] = np.cumsum(nbytes)[:-1]
    total = max(1, int(nbytes.sum()))
    # Checked before anything is decoded or written: a cache that cannot fit fails in one sentence, not after an hour.
    if file is None and total > available_memory():
        raise ConfigError(
            f"data.cache memory needs {gigabytes(total)} for {len(paths)} images at {side} px but {gigabytes(available_memory())} "
            "of memory is available: use data.cache disk, lower data.cache_side, or data.cache none."
        )
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(file.parent).free
        if total > free:
            raise DataError(
                f"data.cache disk needs {gigabytes(total)} in {file.parent} but {gigabytes(free)} is free: free some space, "
                "set data.cache_dir to another disk, or use data.cache memory."
            )
    if file is None:
        buffer = torch.empty(total, dtype=torch.uint8)
        view = buffer.numpy()
    else:
        # Per-process temporary names: DDP ranks may build the same cache at once; each rename is atomic.
        partial = Path(f"{file}.{os.getpid()}.partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        view = np.memmap(partial, dtype=np.uint8, mode="w+", shape=(total,))
    try:
        for i, array, error in _decode_all(paths, sizes, num_workers):
            if array is None:
                if not skip_corrupt:
                    raise UnreadableImageError(error)
                index[i, 1:] = 0
                continue
            view[index[i, 0] : index[i, 0] + array.size] = array.reshape(-1)
        if file is None:
            return DecodedImages(index, buffer=buffer)
        view.flush()
        del view
        with open(f"{partial}.npy", "wb") as f:
            np.save(f, index)
        os.replace(f"{partial}.npy", f"{file}.index.npy")
        os.replace(partial, file)  # the data file appears only complete, after its index
        return DecodedImages(index, file=file)
    finally:
        if file is not None:
            partial.unlink(missing_ok=True)
            Path(f"{partial}.npy").unlink(missing_ok=True)


def read_cache_index(file: Path) -> np.ndarray | None:
    """The index of a complete disk cache at ``file``; None (after removing the pieces) if there is none or it is incomplete."""
    index_file = Path(f"{file}.index.npy")
    if not file.exists() and not index_file.exists():
        return None
    try:
        index = np.load(index_file)
        expected = max(1, int((index[:, 1] * index[:, 2] * 3).sum()))
        if index.ndim == 2 and index.shape[1] == 3 and file.stat().st_size == expected:
            return index
    except (OSError, ValueError, EOFError, IndexError):
        pass
    # Truncated or half-deleted (a full disk, a killed copy): decode those images again.
    warnings.warn(f"The disk cache {file} is incomplete; decoding its images again.", stacklevel=3)
    file.unlink(missing_ok=True)
    index_file.unlink(missing_ok=True)
    return None


class ImageFileDataset(Dataset):
    """``(path, label)`` samples decoded with PIL, or read from a :class:`DecodedImages` cache after ``prepare``."""

    def __init__(self, samples: list[tuple[str, int]], transform=None, *, skip_corrupt: bool = False) -> None:
        self.samples, self.transform, self.skip_corrupt = list(samples), transform, skip_corrupt
        self.decoded: DecodedImages | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        image = self.decoded[i] if self.decoded is not None else decode_image(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def prepare(self, cache: str = "none", *, side: int, num_workers: int = 0, cache_file: Path | None = None) -> None:
        """Fill the cache (``'memory'`` or ``'disk'``, under ``cache_file`` plus a key), or with
        ``skip_corrupt`` and no cache, find the unreadable files once; then drop them with one warning."""
        paths = [p for p, _ in self.samples]
        if cache == "none":
            if not self.skip_corrupt:
                return
            sizes = [shorter_side_size(p, _SCAN_SIDE) for p in paths]
            bad = [i for i, array, _ in _decode_all(paths, sizes, num_workers) if array is None]
        else:
            file = None
            if cache == "disk":
                # Keyed by every path, size and modification time: a changed image set builds a new cache.
                stats = (os.stat(p) for p in paths)
                listing = "\n".join(f"{p} {s.st_size} {s.st_mtime_ns}" for p, s in zip(paths, stats))
                file = Path(f"{cache_file}-{side}px-{hashlib.md5(listing.encode()).hexdigest()[:12]}.u8")
            index = read_cache_index(file) if file is not None else None
            if index is not None:
                self.decoded = DecodedImages(index, file=file)
            else:
                rank_zero_info(f"Decoding {len(paths)} images once into the {cache} cache ({side} px shorter side)...")
                self.decoded = build_decoded(paths, side, num_workers, file, self.skip_corrupt)
            bad = np.flatnonzero(self.decoded.index[:, 1] == 0).tolist()
            if bad and not self.skip_corrupt:
                decode_image(paths[bad[0]])  # raises, naming the file
                raise UnreadableImageError(f"Cannot read image {paths[bad[0]]}; delete {file} to decode it again.")
        if bad:
            keep = sorted(set(range(len(paths))) - set(bad))
            self.samples = [self.samples[i] for i in keep]
            if self.decoded is not None:
                self.decoded = self.decoded.select(keep)
            shown = ", ".join(paths[i] for i in bad[:3])
            more = ", ..." if len(bad) > 3 else ""
            warnings.warn(f"Skipped {len(bad)} unreadable of {len(paths)} images ({shown}{more}).", stacklevel=2)
