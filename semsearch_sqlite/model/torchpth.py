"""Read PyTorch ``.pth`` state dicts into numpy arrays without installing torch.

Handles the legacy (pre-1.6) format, a run of pickles followed by raw little-endian
storages, and the zip format torch has written since 1.6. Unpickling is restricted to
the few globals a plain state dict needs, so a malicious file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from semsearch_sqlite.errors import BackboneError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype of one element (bfloat16 is widened later)
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage whose bytes are filled in after the object pickle has been read."""

    def __init__(self, key: str, stype: _StorageType, numel: int):
        self.key, self.stype, self.numel = key, stype, numel
        self.array: np.ndarray | None = None


class _TensorRef:
    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialise(self) -> np.ndarray:
        data = self.storage.array
        if data is None:
            raise BackboneError(f"storage {self.storage.key} has no data; the .pth file is truncated")
        if self.storage.stype.name == "BFloat16Storage":
            data = (data.astype(np.uint32) << 16).view(np.float32)
        if not self.size:
            return np.array(data[self.offset])
        itemsize = data.dtype.itemsize
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, data.dtype)
        if last >= data.size:
            raise BackboneError(f"tensor reaches past the end of storage {self.storage.key}; the .pth file is corrupt")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=[s * itemsize for s in self.stride]
        )
        return np.array(view)


def _rebuild_tensor_v2(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _TensorRef:
    return _TensorRef(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name} (only plain tensor state dicts are read)"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {stype!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 files) are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(key, stype, numel)
        return self.storages[key]


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict saved with ``torch.save``.

    Args:
        path: a ``.pth``/``.pt`` file in torch's legacy or zip format.

    Returns:
        Parameter name -> numpy array (same shape and layout as the torch tensor).

    Raises:
        BackboneError: the file is missing, not a torch file, or holds more than tensors.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            obj, storages = _load_zip(path)
        else:
            with open(path, "rb") as f:
                obj, storages = _load_legacy(f, path)
    except OSError as e:
        raise BackboneError(f"{path}: cannot read ({e.strerror or e}); check the weights path") from e
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BackboneError(f"{path}: not a readable PyTorch state dict ({e}); pass a state-dict .pth file") from e
    if not isinstance(obj, dict):
        raise BackboneError(f"{path}: holds a {type(obj).__name__}, not a state dict; save model.state_dict() instead")
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise BackboneError(f"{path}: entry {name!r} is not a tensor; pass a plain state-dict .pth file")
        out[str(name)] = value.materialise()
    return out


def _load_legacy(f: IO[bytes], path: Path) -> tuple[Any, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    if _Unpickler(f, storages).load() != LEGACY_MAGIC:
        raise BackboneError(f"{path}: not a PyTorch .pth file (bad magic number); pass a file written by torch.save")
    protocol = _Unpickler(f, storages).load()
    if protocol != LEGACY_PROTOCOL:
        raise BackboneError(f"{path}: unsupported torch serialisation protocol {protocol!r}")
    sys_info = _Unpickler(f, storages).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise BackboneError(f"{path}: written on a big-endian machine; re-save it on a little-endian one")
    obj = _Unpickler(f, storages).load()
    keys = _Unpickler(f, storages).load()
    for key in keys:
        storage = storages[str(key)]
        (numel,) = struct.unpack("<q", _read_exact(f, 8, path))
        nbytes = numel * storage.stype.dtype.itemsize
        storage.array = np.frombuffer(_read_exact(f, nbytes, path), storage.stype.dtype)
    return obj, storages


def _load_zip(path: Path) -> tuple[Any, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise BackboneError(f"{path}: a zip file without data.pkl, not a torch file")
        prefix = pkl[: -len("data.pkl")]
        with z.open(pkl) as f:
            obj = _Unpickler(f, storages).load()  # type: ignore[arg-type]
        for key, storage in storages.items():
            raw = z.read(f"{prefix}data/{key}")
            storage.array = np.frombuffer(raw, storage.stype.dtype, count=storage.numel)
    return obj, storages


def _read_exact(f: IO[bytes], n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise BackboneError(f"{path}: truncated (wanted {n} more bytes); download the weights file again")
    return data
