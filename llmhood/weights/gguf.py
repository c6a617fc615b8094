"""Reading GGUF, llama.cpp's single-file model format, from scratch.

A GGUF file is, in order (all integers little-endian):

    magic "GGUF" | version u32 | tensor count u64 | metadata count u64
    metadata:     key string | value type u32 | value                     (repeated)
    tensor infos: name string | n_dims u32 | ne u64 * n_dims | ggml type u32 | offset u64
    padding to the alignment (metadata `general.alignment`, default 32)
    tensor data:  each tensor at data start + its offset, itself aligned

A string is a u64 byte length and UTF-8 bytes; an array is an element type u32, a u64
count and the elements (arrays may nest). Version 1 used 32-bit lengths and counts and is
not read here. `ne` lists dimensions innermost first (ggml order), the reverse of torch's
row-major shape.

The file is memory-mapped: parsing reads only the header, and a tensor's bytes are paged
in when it is dequantized. Every way the bytes can disagree with this layout becomes an
LLMHoodError that names the byte offset, because "truncated download" and "not a model
at all" call for different fixes.
"""

from __future__ import annotations

import dataclasses
import difflib
import mmap
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmhood.errors import LLMHoodError
from llmhood.weights.quants import GGMLType, dequantize, tensor_nbytes

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
"""ggml tensors have at most 4 dimensions."""


class GGUFValueType(IntEnum):
    """Type ids of metadata values."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size value types: their struct format (standard sizes, little-endian) and the
# numpy dtype that reads an array of them in one go.
_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<B",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_SCALAR_STRUCTS = {vtype: struct.Struct(fmt) for vtype, fmt in _SCALAR_FORMATS.items()}
_SCALAR_DTYPES = {vtype: np.dtype(fmt) for vtype, fmt in _SCALAR_FORMATS.items()}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SMALLEST_VALUE = 1
"""Fewest bytes any metadata value can take (a u8, i8 or bool); bounds array counts."""
_CUT_SHORT = (
    "The file was cut short (an interrupted download or copy); download it again, or "
    "reinstall the package that ships it."
)
_DAMAGED = (
    "The file is damaged or is not really GGUF; download it again, or re-convert the model "
    "with llama.cpp's convert_hf_to_gguf.py."
)


@dataclass(frozen=True)
class GGUFTensorInfo:
    """Where one tensor lives in the file and how to decode it."""

    name: str
    shape: tuple[int, ...]  # torch (row-major) order: the reverse of ggml's `ne`
    ggml_type: GGMLType
    offset: int  # absolute byte offset of the first byte in the file
    nbytes: int


@dataclass(frozen=True, eq=False)
class GGUFFile:
    """A parsed GGUF file; tensor bytes stay in the memory map until asked for."""

    path: Path
    version: int
    alignment: int
    data_offset: int  # absolute offset of the tensor data section
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensorInfo]  # in file order
    _bytes: np.ndarray = dataclasses.field(repr=False)  # the whole file, uint8, memory-mapped

    def _info(self, name: str) -> GGUFTensorInfo:
        info = self.tensors.get(name)
        if info is None:
            close = difflib.get_close_matches(name, self.tensors, n=3)
            hint = f" Similar names: {', '.join(close)}." if close else ""
            raise LLMHoodError(
                f"{self.path} has no tensor named {name!r} (it holds {len(self.tensors)} "
                f"tensors).{hint} Check that this file is the model you meant to load."
            )
        return info

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the memory map (no copy)."""
        info = self._info(name)
        return self._bytes[info.offset : info.offset + info.nbytes]

    def load(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The tensor dequantized into new memory, shape `info.shape`."""
        info = self._info(name)
        try:
            tensor = dequantize(self.raw(name), info.ggml_type, info.shape)
        except LLMHoodError as error:
            raise LLMHoodError(f"Cannot load tensor {name!r} from {self.path}: {error}") from None
        return tensor.to(dtype)


class _Parser:
    """A cursor over the header bytes that turns every out-of-bounds read into an error
    naming what was being read, where, and where the file ends."""

    def __init__(self, path: Path, buffer: mmap.mmap) -> None:
        self.path = path
        self.buffer = buffer
        self.size = len(buffer)
        self.pos = 0
        self.context = "the file header"  # what is being parsed, for error messages
        self.alignment = DEFAULT_ALIGNMENT  # until the metadata says otherwise

    def _truncated(self, n: int, what: str, at: int) -> LLMHoodError:
        return LLMHoodError(
            f"{self.path} is truncated: expected {n} bytes for {what} in {self.context} at "
            f"offset {at}, but the file ends at offset {self.size}. {_CUT_SHORT}"
        )

    def corrupt(self, problem: str, at: int, advice: str = _DAMAGED) -> LLMHoodError:
        return LLMHoodError(
            f"{self.path} is corrupt: {problem} (in {self.context}, at byte offset {at}). {advice}"
        )

    def take(self, n: int, what: str) -> int:
        """Reserve the next n bytes and return their offset."""
        at = self.pos
        if at + n > self.size:
            raise self._truncated(n, what, at)
        self.pos = at + n
        return at

    def u32(self, what: str) -> int:
        return _U32.unpack_from(self.buffer, self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack_from(self.buffer, self.take(8, what))[0]

    def length(self, what: str, item_size: int) -> int:
        """A u64 count of items of at least `item_size` bytes each. Items that could not
        fit even in the whole file mean a corrupt count rather than a truncated file."""
        at = self.pos
        count = self.u64(f"the length of {what}")
        if count * item_size > self.size:
            raise self.corrupt(
                f"the length of {what} is {count}, which needs at least {count * item_size} "
                f"bytes, more than the whole file ({self.size} bytes)",
                at,
            )
        return count

    def string(self, what: str) -> str:
        n = self.length(what, 1)
        at = self.take(n, what)
        try:
            return self.buffer[at : at + n].decode("utf-8")
        except UnicodeDecodeError as error:
            raise self.corrupt(f"{what} is not valid UTF-8 ({error.reason})", at) from None

    def value_type(self, what: str) -> GGUFValueType:
        at = self.pos
        type_id = self.u32(what)
        try:
            return GGUFValueType(type_id)
        except ValueError:
            known = ", ".join(f"{t.value} ({t.name})" for t in GGUFValueType)
            raise self.corrupt(
                f"unknown metadata value type id {type_id}; the known ids are {known}", at
            ) from None

    def value(self, vtype: GGUFValueType) -> Any:
        """One metadata value as a Python value (int, float, bool, str or list)."""
        if vtype == GGUFValueType.STRING:
            return self.string("a string value")
        if vtype == GGUFValueType.ARRAY:
            return self.array()
        scalar = _SCALAR_STRUCTS[vtype]
        (value,) = scalar.unpack_from(self.buffer, self.take(scalar.size, f"a {vtype.name}"))
        return bool(value) if vtype == GGUFValueType.BOOL else value

    def array(self) -> list[Any]:
        element_type = self.value_type("the element type of an array")
        dtype = _SCALAR_DTYPES.get(element_type)
        item_size = _SMALLEST_VALUE if dtype is None else dtype.itemsize
        count = self.length(f"an array of {element_type.name}", item_size)
        if dtype is None:  # strings and nested arrays: variable size, one at a time
            return [self.value(element_type) for _ in range(count)]
        at = self.take(count * dtype.itemsize, f"an array of {count} {element_type.name}")
        values = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=at)
        if element_type == GGUFValueType.BOOL:
            return (values != 0).tolist()
        return values.tolist()

    def metadata(self, count: int) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        for index in range(count):
            self.context = f"metadata entry {index}"
            at = self.pos
            key = self.string("a metadata key")
            self.context = f"metadata entry {index} ({key!r})"
            if key in metadata:
                raise self.corrupt(f"the metadata key {key!r} appears twice", at)
            metadata[key] = self.value(self.value_type("a metadata value type"))
        return metadata

    def set_alignment(self, metadata: dict[str, Any]) -> None:
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            self.context = "the metadata"
            raise self.corrupt(f"general.alignment is {alignment!r}, not a power of two", self.pos)
        self.alignment = alignment

    def tensor_info(self, index: int) -> GGUFTensorInfo:
        """One tensor info; its offset is still relative to the data section."""
        self.context = f"tensor info {index}"
        name = self.string("a tensor name")
        self.context = f"tensor info {index} ({name!r})"
        at = self.pos
        n_dims = self.u32("the number of dimensions")
        if n_dims > MAX_DIMS:
            raise self.corrupt(f"the tensor has {n_dims} dimensions; ggml allows {MAX_DIMS}", at)
        ne = [self.u64(f"dimension {i}") for i in range(n_dims)]
        at = self.pos
        type_id = self.u32("the ggml type")
        try:
            ggml_type = GGMLType(type_id)
        except ValueError:
            known = ", ".join(f"{t.value} ({t.name})" for t in GGMLType)
            raise self.corrupt(
                f"unknown ggml tensor type id {type_id}; the known ids are {known}",
                at,
                "Either the file is damaged (download it again) or a newer llama.cpp wrote a "
                "type llmhood does not know; then use a file quantized to a common type such "
                "as Q4_K_M or Q8_0.",
            ) from None
        shape = tuple(reversed(ne))
        try:
            nbytes = tensor_nbytes(ggml_type, shape)
        except ValueError as error:
            raise self.corrupt(str(error), at) from None
        offset = self.u64("the data offset")
        if offset % self.alignment:
            raise self.corrupt(
                f"the data offset {offset} is not a multiple of the alignment {self.alignment}",
                self.pos - 8,
            )
        return GGUFTensorInfo(name, shape, ggml_type, offset, nbytes)


def _open(path: Path) -> mmap.mmap:
    if not path.exists():
        raise LLMHoodError(
            f"The model file {path} does not exist. Check the path, or run `llmhood demo`, "
            "which uses the bundled SmolLM2 GGUF."
        )
    if not path.is_file():
        raise LLMHoodError(f"{path} is a directory, not a GGUF file; pass the .gguf file itself.")
    try:
        with path.open("rb") as file:
            if path.stat().st_size == 0:
                raise LLMHoodError(
                    f"{path} is empty (0 bytes), so it is not a GGUF model; download it again."
                )
            return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as error:
        raise LLMHoodError(f"Cannot read {path}: {error.strerror}.") from None


def _what_is_it(head: bytes) -> str:
    """A guess at what a non-GGUF file is, from the usual suspects of a bad download."""
    if head.startswith(b"version https://git-lfs"):
        return " This is a Git LFS pointer, not the model: run `git lfs pull`."
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return " This is an HTML page, probably an error page saved instead of the model."
    if head.startswith(b"PK\x03\x04"):
        return " This is a zip archive, such as a PyTorch .bin/.pt checkpoint."
    if head[8:9] == b"{":
        return " This looks like a safetensors file; pass its model directory instead."
    return ""


def _check_magic_and_version(parser: _Parser) -> int:
    head = parser.buffer[:32]
    if head[:4] != GGUF_MAGIC:
        raise LLMHoodError(
            f"{parser.path} is not a GGUF file: a GGUF file starts with the 4 bytes "
            f"{GGUF_MAGIC!r} ({GGUF_MAGIC.hex(' ')}), but this one starts with {head[:4]!r} "
            f"({head[:4].hex(' ')}).{_what_is_it(head)} Pass a .gguf model file."
        )
    parser.take(4, "the magic")
    version = parser.u32("the version")
    if version in SUPPORTED_VERSIONS:
        return version
    swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
    if swapped in SUPPORTED_VERSIONS:
        detail = (
            f"it is a big-endian GGUF (version {swapped} with its bytes swapped), and llmhood "
            "reads only little-endian files"
        )
    elif version == 1:
        detail = "version 1 (2023) used 32-bit lengths and is obsolete"
    else:
        detail = f"its version is {version}"
    raise LLMHoodError(
        f"{parser.path} uses an unsupported GGUF version (the u32 at offset 4): {detail}. "
        f"llmhood reads GGUF versions {' and '.join(map(str, SUPPORTED_VERSIONS))}; "
        "re-convert the model with a current llama.cpp."
    )


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header; tensor data is only mapped, not read."""
    path = Path(path)
    buffer = _open(path)
    parser = _Parser(path, buffer)
    version = _check_magic_and_version(parser)
    tensor_count = parser.length("the tensor count", 1)
    metadata = parser.metadata(parser.length("the metadata count", 1))

    parser.set_alignment(metadata)
    relative: dict[str, GGUFTensorInfo] = {}
    for index in range(tensor_count):
        info_at = parser.pos
        info = parser.tensor_info(index)
        if info.name in relative:
            raise parser.corrupt(f"the tensor name {info.name!r} appears twice", info_at)
        relative[info.name] = info

    data_offset = -(-parser.pos // parser.alignment) * parser.alignment  # round up
    tensors = {}
    for name, info in relative.items():
        start, end = data_offset + info.offset, data_offset + info.offset + info.nbytes
        if end > parser.size:
            raise LLMHoodError(
                f"{path} is truncated: the data of tensor {name!r} ({info.ggml_type.name}, "
                f"shape {info.shape}) spans bytes {start} to {end}, but the file ends at "
                f"offset {parser.size}. {_CUT_SHORT}"
            )
        tensors[name] = dataclasses.replace(info, offset=start)

    file_bytes = np.frombuffer(buffer, dtype=np.uint8)
    return GGUFFile(path, version, parser.alignment, data_offset, metadata, tensors, file_bytes)
