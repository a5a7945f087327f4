"""Read a *legacy* (pre-1.6, non-zip) ``torch.save`` state dict with numpy only.

The file is five things in a row: four pickles (magic number, protocol version,
system info, the object itself), where the object's tensors are
``torch._utils._rebuild_tensor_v2`` calls over *persistent* storages, then a
pickled list of storage keys, then for each key the storage's raw
little-endian bytes prefixed by an int64 element count.

The unpickler is restricted: it resolves only the handful of globals a state
dict needs and refuses everything else, so a hostile file cannot run code.
"""

import collections
import pickle
import struct

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class LegacyTorchError(ValueError):
    """The file is not a legacy torch state dict this reader understands."""


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage whose bytes come after the pickles; filled in by ``load_state_dict``."""

    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.array = dtype, numel, None


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self):
        flat = self.storage.array
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=[s * item for s in self.stride])
        return np.array(view)  # a contiguous copy, detached from the storage


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise LegacyTorchError(f"refusing to load global {module}.{name} from a weights file")

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise LegacyTorchError(f"unsupported persistent id {saved_id!r}")
        storage_type, key, _location, numel, view_metadata = saved_id[1:6]
        if view_metadata is not None:
            raise LegacyTorchError("storage views are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type.dtype, numel)
        return self._storages[key]


def _plain_load(f):
    return _RestrictedUnpickler(f, {}).load()


def load_state_dict(path):
    """Return ``{name: numpy array}`` from a legacy torch state-dict file."""
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise LegacyTorchError(f"{path} is a zip-format torch file, not the legacy format")
        f.seek(0)
        if _plain_load(f) != MAGIC_NUMBER:
            raise LegacyTorchError(f"{path} is not a legacy torch file (bad magic number)")
        if _plain_load(f) != PROTOCOL_VERSION:
            raise LegacyTorchError(f"{path}: unsupported torch protocol version")
        sys_info = _plain_load(f)
        if not sys_info.get("little_endian", True):
            raise LegacyTorchError(f"{path}: big-endian files are not supported")
        storages = {}
        obj = _RestrictedUnpickler(f, storages).load()
        keys = _plain_load(f)
        for key in keys:
            storage = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            if count != storage.numel:
                raise LegacyTorchError(f"{path}: storage {key} holds {count} elements, expected {storage.numel}")
            nbytes = count * storage.dtype.itemsize
            data = f.read(nbytes)
            if len(data) != nbytes:
                raise LegacyTorchError(f"{path} is truncated")
            storage.array = np.frombuffer(data, dtype=storage.dtype.newbyteorder("<"))
    if not isinstance(obj, dict):
        raise LegacyTorchError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {name: (v.materialize() if isinstance(v, _TensorRef) else v) for name, v in obj.items()}
