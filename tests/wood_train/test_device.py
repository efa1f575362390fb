"""One place picks the device: resolve_device, autocast and pin_memory, used by every loader."""

import ast
from pathlib import Path

import pytest
import torch

from wood_train import device as device_module
from wood_train.data.datasets import ImageListDataset, fixed_order_loader
from wood_train.data.transforms import TrainTransform
from wood_train.device import autocast, pin_memory, resolve_device
from wood_train.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
LIBRARY = ("wood_train", "curate", "app")


def test_auto_is_cuda_only_when_cuda_is_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="--device 'gpu'"):
        resolve_device("gpu")


def test_pinned_memory_and_autocast_only_on_cuda():
    assert pin_memory(torch.device("cuda")) and not pin_memory(torch.device("cpu"))
    with autocast(torch.device("cpu"), enabled=True):
        assert not torch.is_autocast_enabled("cpu")


def test_training_loader_pins_memory_when_asked(tmp_path):
    dataset = ImageListDataset([tmp_path / "a.jpg"], None, 2, TrainTransform())
    assert fixed_order_loader(dataset, [0], 1, pin_memory=True).pin_memory
    assert not fixed_order_loader(dataset, [0], 1).pin_memory


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    def called(node: ast.Call) -> str:
        func = node.func
        return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")

    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and called(n) == name]


def test_device_policy_lives_in_device_py_and_every_loader_uses_it():
    """No module but wood_train/device.py asks for CUDA or turns autocast on; every DataLoader
    says whether it pins memory, and no tensor is moved with .cuda()."""
    own = Path(device_module.__file__).resolve()
    problems = []
    for path in sorted(p for room in LIBRARY for p in (REPO / room).rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        name = path.relative_to(REPO)
        for call in _calls(tree, "DataLoader"):
            if not any(k.arg in ("pin_memory", None) for k in call.keywords):
                problems.append(f"{name}:{call.lineno}: DataLoader without pin_memory=")
        for call in _calls(tree, "cuda"):
            problems.append(f"{name}:{call.lineno}: .cuda() instead of .to(device)")
        if path.resolve() != own:
            for call in _calls(tree, "is_available") + _calls(tree, "autocast"):
                text = ast.get_source_segment(source, call.func) or ""
                if text.startswith("torch.cuda.is_available") and path.name == "distributed.py":
                    continue  # the DDP backend (nccl or gloo), not a device choice
                if any(k.arg == "enabled" and getattr(k.value, "value", None) is False
                       for k in call.keywords):  # fmt: skip
                    continue  # switching autocast off for float32 maths (W-OoD's distances)
                if text.startswith(("torch.cuda.is_available", "torch.autocast")):
                    problems.append(f"{name}:{call.lineno}: {text} outside wood_train/device.py")
    assert problems == []
