"""torchpth: PyTorch state dicts read without torch, legacy and zip formats."""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semsearch_sqlite.errors import BackboneError
from semsearch_sqlite.model.efficientnet import efficientnet_lite0_weights_file
from semsearch_sqlite.model.torchpth import LEGACY_MAGIC, load_state_dict


@pytest.fixture(scope="module")
def effnet_state() -> dict[str, np.ndarray]:
    return load_state_dict(efficientnet_lite0_weights_file())


def test_reads_the_real_efficientnet_lite0_file(effnet_state: dict[str, np.ndarray]) -> None:
    assert len(effnet_state) == 296
    assert sum(v.size for v in effnet_state.values()) == 4_694_073
    assert effnet_state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert effnet_state["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert effnet_state["_fc.weight"].shape == (1000, 1280)
    assert effnet_state["_bn0.num_batches_tracked"].dtype == np.int64
    # values read by torch.load (torch 2.13.0) from the same file
    fc_bias = [0.032053910195827484, -0.01598576083779335, 0.005290735047310591]
    stem = [-1.1103360652923584, -1.3087704181671143, -0.010156914591789246]
    assert effnet_state["_fc.bias"][:3].tolist() == pytest.approx(fc_bias)
    assert effnet_state["_conv_stem.weight"][0, 0, 0].tolist() == pytest.approx(stem)
    assert float(effnet_state["_blocks.5._bn1.running_var"].sum()) == pytest.approx(164.4687957763672, rel=1e-6)


# Hand-written torch pickles: stand-in classes that pickle as torch's own globals.
def _torch_global(module: str, name: str) -> type:
    return type(name, (), {"__module__": module, "__qualname__": name})


FLOAT, LONG = _torch_global("torch", "FloatStorage"), _torch_global("torch", "LongStorage")
REBUILD = _torch_global("torch._utils", "_rebuild_tensor_v2")


class _Pickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Writes the stand-ins as plain GLOBAL opcodes (no import check) and storages as persistent ids."""

    def __init__(self, f: io.BytesIO, storages: dict[int, tuple[str, type, np.ndarray]]):
        super().__init__(f, protocol=2)
        self.storages = storages

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj in (FLOAT, LONG, REBUILD, _Evil):
            self.write(pickle.GLOBAL + f"{obj.__module__}\n{obj.__qualname__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Store):
            return ("storage", obj.kind, obj.key, "cpu", obj.data.size, None)
        return None


class _Store:
    def __init__(self, key: str, kind: type, data: np.ndarray):
        self.key, self.kind, self.data = key, kind, data


class _Tensor:
    def __init__(self, store: _Store, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.args = (store, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self) -> Any:
        return (REBUILD, self.args)


_Evil = _torch_global("os", "system")


def _state() -> tuple[collections.OrderedDict[str, Any], list[_Store]]:
    weights = _Store("0", FLOAT, np.arange(12, dtype="<f4"))
    count = _Store("1", LONG, np.array([7], dtype="<i8"))
    state = collections.OrderedDict(
        w=_Tensor(weights, 0, (3, 4), (4, 1)),
        wt=_Tensor(weights, 0, (4, 3), (1, 4)),  # a transposed view of the same storage
        row=_Tensor(weights, 4, (4,), (1,)),
        n=_Tensor(count, 0, (), ()),
    )
    return state, [weights, count]


def _dump(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, {}).dump(obj)
    return buf.getvalue()


def _legacy_file(path: Path, state: Any, stores: list[_Store]) -> Path:
    parts = [
        _dump(LEGACY_MAGIC),
        _dump(1001),
        _dump({"protocol_version": 1001, "little_endian": True}),
        _dump(state),
        _dump([s.key for s in stores]),
    ]
    for s in stores:
        parts.append(struct.pack("<q", s.data.size) + s.data.tobytes())
    path.write_bytes(b"".join(parts))
    return path


def _check(sd: dict[str, np.ndarray]) -> None:
    assert list(sd) == ["w", "wt", "row", "n"]
    assert sd["w"].tolist() == np.arange(12).reshape(3, 4).tolist() and sd["w"].dtype == np.float32
    assert sd["wt"].tolist() == np.arange(12).reshape(3, 4).T.tolist()
    assert sd["row"].tolist() == [4, 5, 6, 7]
    assert sd["n"].shape == () and int(sd["n"]) == 7 and sd["n"].dtype == np.int64


def test_legacy_format_views_and_dtypes(tmp_path: Path) -> None:
    _check(load_state_dict(_legacy_file(tmp_path / "legacy.pth", *_state())))


def test_zip_format(tmp_path: Path) -> None:
    state, stores = _state()
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _dump(state))
        z.writestr("archive/byteorder", "little")
        for s in stores:
            z.writestr(f"archive/data/{s.key}", s.data.tobytes())
    _check(load_state_dict(path))


def test_refuses_other_globals(tmp_path: Path) -> None:
    state, stores = _state()
    state["evil"] = _Evil
    with pytest.raises(BackboneError, match="refusing to load global os.system"):
        load_state_dict(_legacy_file(tmp_path / "evil.pth", state, stores))


def test_truncated_and_foreign_files(tmp_path: Path) -> None:
    good = _legacy_file(tmp_path / "good.pth", *_state())
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(BackboneError, match="truncated"):
        load_state_dict(cut)
    other = tmp_path / "other.pth"
    other.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(BackboneError, match="other.pth"):
        load_state_dict(other)
    with pytest.raises(BackboneError, match="cannot read"):
        load_state_dict(tmp_path / "missing.pth")
