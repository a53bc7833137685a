"""Shared helpers: run the CLI the way the shell does, read the metrics it logged; one session-scoped miniature
per dataset format (tests/miniatures.py writes them) and untrained teachers, built once for every test that needs one."""

from __future__ import annotations

import csv
import ipaddress
import socket
from pathlib import Path

import pytest
import torch
from miniatures import make_cifar10, make_cifar100, make_cub200, make_image_folder, make_imagenette

from bagoftricks.cli import cli_main
from bagoftricks.models import create_model

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
DIGITS_BASE = EXPERIMENTS / "digits" / "base.yaml"


def _loopback(host) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test reaches beyond this machine: a name lookup or a connection to anything but loopback fails
    at once, so a download test that forgot to stub its transfer fails here instead of trying the internet.
    (Local sockets stay: DDP's gloo, W&B's offline service.) Proxy settings are dropped, so that no request
    goes out through a proxy on this machine."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    getaddrinfo, connect, connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def check(host, what):
        if not _loopback(host):
            raise OSError(f"tests must not reach the network ({what} {host})")

    def local_getaddrinfo(host, *args, **kwargs):
        check(host if not isinstance(host, bytes) else host.decode(), "lookup of")
        return getaddrinfo(host, *args, **kwargs)

    def local_only(method):
        def guarded(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                check(address[0], "connection to")
            return method(self, address)

        return guarded

    monkeypatch.setattr(socket, "getaddrinfo", local_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", local_only(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", local_only(connect_ex))


# A ResNet-18 of an eighth of the width (183k parameters): a checkpoint of 1.5 MB, not 90, for the tests
# that write one to load or resume it.
NARROW_WIDTHS = [8, 16, 32, 64]
NARROW = ["--model.backbone_kwargs", f"{{channels: {NARROW_WIDTHS}}}"]
# Small enough for a 2-core CI: a batch of 16 digits at 32 px.
TINY = ["--data.batch_size", "16", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def fit(tmp_path: Path, *args: str, checkpoint: bool = False, **kwargs):
    """`bagoftricks fit ARGS` with all outputs under tmp_path and a CSV logger there.

    Checkpointing is off unless ``checkpoint``: a digits fit's best and last checkpoints hold about
    90 MB each, and only a test that loads or resumes one needs them.
    With ``run=False`` the CLI only builds model, data and trainer (no subcommand).
    """
    subcommand = ["fit"] if kwargs.get("run", True) else []
    argv = [*subcommand, *args, "--trainer.default_root_dir", str(tmp_path)]
    argv += ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path)]
    if not checkpoint:
        argv += ["--trainer.enable_checkpointing", "false"]
    return cli_main(argv, **kwargs)


def read_metrics(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory) -> Path:
    """A real (briefly trained) teacher checkpoint on digits, for the distillation tests (a narrow ResNet-18, weights only)."""
    out = tmp_path_factory.mktemp("teacher")
    fit(
        out, "-c", str(DIGITS_BASE), *TINY, *NARROW,
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
        "--checkpoint.dirpath", str(out), "--checkpoint.filename", "teacher", "--checkpoint.save_last", "false",
        "--checkpoint.save_weights_only", "true", checkpoint=True,
    )  # fmt: skip
    return out / "teacher.ckpt"


@pytest.fixture(scope="session")
def untrained_teacher(tmp_path_factory):
    """``untrained_teacher(num_classes)``: a narrow ResNet-18 teacher file in the layout of this library's checkpoints
    (``backbone.``-prefixed weights and the hyperparameters naming the backbone and its widths), written once per
    class count. The weights are stored in bfloat16: ``load_state_dict`` copies them into the float32 network."""
    root, paths = tmp_path_factory.mktemp("teachers"), {}

    def teacher(num_classes: int) -> Path:
        if num_classes not in paths:
            network = create_model("resnet18", num_classes, channels=NARROW_WIDTHS)
            state = {f"backbone.{key}": value.bfloat16() if value.is_floating_point() else value for key, value in network.state_dict().items()}
            paths[num_classes] = root / f"resnet18-{num_classes}.ckpt"
            hparams = {"backbone": "resnet18", "backbone_kwargs": {"channels": NARROW_WIDTHS}, "num_classes": num_classes}
            torch.save({"state_dict": state, "hyper_parameters": hparams}, paths[num_classes])
        return paths[num_classes]

    return teacher


# ----------------------------------------------------------------------------- one miniature per dataset format


@pytest.fixture(scope="session")
def imagenette_root(tmp_path_factory) -> Path:
    """``root/imagenette2-160/{train,val}/<wnid>/*.JPEG`` and ``noisy_imagenette.csv``: the official archive's layout."""
    return make_imagenette(tmp_path_factory.mktemp("imagenette"), "imagenette2-160")


@pytest.fixture(scope="session")
def imagenette_copy_root(tmp_path_factory) -> Path:
    """``root/imagenette2-96/{train,val}/<wnid>/*.JPEG`` without the csv: a copy a user resized by hand (96-px sides)."""
    return make_imagenette(tmp_path_factory.mktemp("imagenette_copy"), "imagenette2-96", side=96, noisy_csv=False)


@pytest.fixture(scope="session")
def imagewoof_root(tmp_path_factory) -> Path:
    """``root/imagewoof2-160/{train,val}/<wnid>/*.JPEG`` and ``noisy_imagewoof.csv``."""
    return make_imagenette(tmp_path_factory.mktemp("imagewoof"), "imagewoof2-160")


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory) -> Path:
    """``root/cifar-100-python/{train,test,meta}``: the real pickles' keys, dtypes and shapes (200 training images)."""
    return make_cifar100(tmp_path_factory.mktemp("cifar100"), n_train=200)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``."""
    return make_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="session")
def cub200_root(tmp_path_factory) -> Path:
    """``root/CUB_200_2011/`` with ``images/NNN.Name/*.jpg`` and the four index files (3 classes)."""
    return make_cub200(tmp_path_factory.mktemp("cub200"))


@pytest.fixture(scope="session")
def image_folder_root(tmp_path_factory) -> Path:
    """``root/{train,test}/<class>/*.jpg`` of 32-px JPEGs: the shared CIFAR-10 photo copy's layout."""
    return make_image_folder(tmp_path_factory.mktemp("image_folder") / "cifar10", per_class=6)
