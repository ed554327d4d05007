"""Device selection: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

An explicitly requested device that is missing raises :class:`DeviceError`; only ``auto``
chooses, and it says what it chose through the returned device.
"""

import re
from typing import TYPE_CHECKING

from medm2g_core.errors import DeviceError

if TYPE_CHECKING:
    import torch

_SPEC = re.compile(r"^(auto|cpu|mps|cuda(?::(\d+))?)$")


def validate_device_spec(spec: str) -> str:
    """Check the syntax of a device spec without touching any accelerator."""
    if not _SPEC.match(spec):
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return spec


def resolve_device(spec: str = "auto") -> "torch.device":
    """Turn a device spec into a ``torch.device`` that exists on this machine."""
    import torch  # imported here so that commands that never run a model start fast

    match = _SPEC.match(validate_device_spec(spec))
    assert match is not None
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("device 'mps' was requested but this machine has no MPS backend")
        return torch.device("mps")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(match.group(2) or 0)
    if index >= count:
        raise DeviceError(
            f"device {spec!r} was requested but torch sees {count} CUDA device(s)"
            + ("" if torch.version.cuda else " (this torch build has no CUDA support)")
        )
    return torch.device("cuda", index)


def visible_devices() -> list[str]:
    """Names of the devices torch can use here, CPU first."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names
