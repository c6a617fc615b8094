"""Our GGUF parser against gguf-py: files written by `gguf.GGUFWriter`, the real SmolLM2
file read by `gguf.GGUFReader`, and damaged copies that must fail with useful messages."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.weights.gguf import GGUFFile, read_gguf
from llmhood.weights.quants import GGMLType

VT = gguf.GGUFValueType
RNG = np.random.default_rng(0)
LONG_STRING = "a string long enough to cut through the middle " * 4

# key -> (value as written, GGUF value type, array element type, value expected back)
METADATA = {
    "test.u8": (200, VT.UINT8, None, 200),
    "test.i8": (-100, VT.INT8, None, -100),
    "test.u16": (60_000, VT.UINT16, None, 60_000),
    "test.i16": (-30_000, VT.INT16, None, -30_000),
    "test.u32": (4_000_000_000, VT.UINT32, None, 4_000_000_000),
    "test.i32": (-2_000_000_000, VT.INT32, None, -2_000_000_000),
    "test.u64": (2**63 + 5, VT.UINT64, None, 2**63 + 5),
    "test.i64": (-(2**62), VT.INT64, None, -(2**62)),
    "test.f32": (0.1, VT.FLOAT32, None, float(np.float32(0.1))),
    "test.f64": (0.1, VT.FLOAT64, None, 0.1),
    "test.true": (True, VT.BOOL, None, True),
    "test.false": (False, VT.BOOL, None, False),
    "test.string": ("héllo, wörld ✓", VT.STRING, None, "héllo, wörld ✓"),
    "test.empty_string": ("", VT.STRING, None, ""),
    "test.long_string": (LONG_STRING, VT.STRING, None, LONG_STRING),
    "test.ints": ([1, -2, 3], VT.ARRAY, VT.INT32, [1, -2, 3]),
    "test.u64s": ([0, 2**64 - 1], VT.ARRAY, VT.UINT64, [0, 2**64 - 1]),
    "test.f32s": ([0.5, -1.25, 1e-3], VT.ARRAY, VT.FLOAT32, [0.5, -1.25, float(np.float32(1e-3))]),
    "test.bools": ([True, False, True], VT.ARRAY, VT.BOOL, [True, False, True]),
    "test.strings": (["a", "", "ünï", "<|im_end|>"], VT.ARRAY, VT.STRING, None),
    "test.nested": ([[1, 2], [3]], VT.ARRAY, None, [[1, 2], [3]]),
    "test.nested_strings": ([["x"], ["y", "z"]], VT.ARRAY, None, [["x"], ["y", "z"]]),
    "test.patch_type": (7, VT.UINT32, None, 7),
    "test.dup_a": (1, VT.UINT8, None, 1),
    "test.dup_b": (2, VT.UINT8, None, 2),
}


def quantized(floats: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    return gguf.quants.quantize(floats, gguf.GGMLQuantizationType(int(ggml_type))).view(np.uint8)


def q6_k_bytes(rows: int, blocks_per_row: int) -> np.ndarray:
    blocks = RNG.integers(0, 256, size=(rows * blocks_per_row, 210), dtype=np.uint8)
    blocks[:, 208:210] = RNG.uniform(-1, 1, (len(blocks), 1)).astype(np.float16).view(np.uint8)
    return blocks.reshape(rows, -1)


# name -> (array handed to the writer, type, expected float32 values)
_F32 = RNG.standard_normal((3, 5)).astype(np.float32)
_F16 = RNG.standard_normal((2, 8)).astype(np.float16)
_VEC = RNG.standard_normal(7).astype(np.float32)
_CUBE = RNG.standard_normal((2, 3, 4)).astype(np.float32)
_Q8 = quantized(RNG.standard_normal((4, 64)).astype(np.float32), GGMLType.Q8_0)
_Q41 = quantized(RNG.standard_normal((3, 64)).astype(np.float32), GGMLType.Q4_1)
_BF16 = quantized(RNG.standard_normal((2, 16)).astype(np.float32), GGMLType.BF16)
_Q6K = q6_k_bytes(rows=2, blocks_per_row=2)


def _ref(data: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    return gguf.quants.dequantize(data, gguf.GGMLQuantizationType(int(ggml_type)))


TENSORS = {
    "f32.weight": (_F32, GGMLType.F32, _F32),
    "f16.weight": (_F16, GGMLType.F16, _F16.astype(np.float32)),
    "vec.weight": (_VEC, GGMLType.F32, _VEC),
    "cube.weight": (_CUBE, GGMLType.F32, _CUBE),
    "q8_0.weight": (_Q8, GGMLType.Q8_0, _ref(_Q8, GGMLType.Q8_0)),
    "q4_1.weight": (_Q41, GGMLType.Q4_1, _ref(_Q41, GGMLType.Q4_1)),
    "bf16.weight": (_BF16, GGMLType.BF16, _ref(_BF16, GGMLType.BF16)),
    "q6_k.weight": (_Q6K, GGMLType.Q6_K, _ref(_Q6K, GGMLType.Q6_K)),
}


def write_gguf(path: Path, tensors: dict, alignment: int | None = None) -> Path:
    writer = gguf.GGUFWriter(path, arch="test")
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for key, (value, vtype, sub_type, _) in METADATA.items():
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
    for name, (array, ggml_type, _) in tensors.items():
        raw_dtype = None if array.dtype != np.uint8 else gguf.GGMLQuantizationType(int(ggml_type))
        writer.add_tensor(name, array, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def small_gguf(tmp_path) -> Path:
    return write_gguf(tmp_path / "small.gguf", TENSORS)


def expected_metadata(alignment: int | None) -> dict:
    expected = {"general.architecture": "test"}
    if alignment is not None:
        expected["general.alignment"] = alignment
    for key, (value, _, _, back) in METADATA.items():
        expected[key] = value if back is None else back
    return expected


def reader_metadata(reader: gguf.GGUFReader) -> dict:
    """gguf-py's view of the metadata, less the header fields it lists as "GGUF.*"."""
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


@pytest.mark.parametrize("alignment", [None, 64])
def test_written_file_reads_back(tmp_path, alignment):
    path = write_gguf(tmp_path / "small.gguf", TENSORS, alignment)
    ours = read_gguf(path)
    reader = gguf.GGUFReader(path)

    assert ours.version == 3
    assert ours.alignment == (alignment or 32)
    assert ours.data_offset == reader.data_offset
    assert ours.metadata == expected_metadata(alignment)
    assert list(ours.metadata) == list(expected_metadata(alignment))
    # gguf-py flattens nested arrays, so they are checked against what was written only.
    flat = {k: v for k, v in reader_metadata(reader).items() if "nested" not in k}
    assert flat == {k: v for k, v in ours.metadata.items() if "nested" not in k}

    assert list(ours.tensors) == list(TENSORS) == [t.name for t in reader.tensors]
    for ref_tensor in reader.tensors:
        array, ggml_type, want = TENSORS[ref_tensor.name]
        info = ours.tensors[ref_tensor.name]
        assert info.ggml_type == ggml_type
        assert info.shape == want.shape
        assert info.offset == ref_tensor.data_offset
        assert info.offset % ours.alignment == 0
        assert info.nbytes == ref_tensor.n_bytes == array.nbytes
        assert np.array_equal(ours.raw(info.name), array.reshape(-1).view(np.uint8))
        got = ours.load(info.name)
        assert got.dtype == torch.float32
        assert np.array_equal(got.numpy(), want)


def test_load_converts_dtype(small_gguf):
    got = read_gguf(small_gguf).load("q4_1.weight", dtype=torch.bfloat16)
    want = torch.from_numpy(TENSORS["q4_1.weight"][2]).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


@pytest.mark.real
def test_real_file_matches_gguf_reader(smollm2_gguf):
    ours = read_gguf(smollm2_gguf)
    reader = gguf.GGUFReader(smollm2_gguf)

    assert ours.version == 3
    want = reader_metadata(reader)
    assert ours.metadata == want
    assert list(ours.metadata) == list(want)
    assert len(ours.tensors) == len(reader.tensors) == 272
    assert ours.tensors["token_embd.weight"].shape == (49152, 576)
    for ref_tensor in reader.tensors:
        info = ours.tensors[ref_tensor.name]
        assert int(info.ggml_type) == int(ref_tensor.tensor_type)
        assert info.offset == ref_tensor.data_offset
        assert info.nbytes == ref_tensor.n_bytes
        want = gguf.quants.dequantize(ref_tensor.data, ref_tensor.tensor_type)
        got = ours.load(ref_tensor.name)
        assert got.shape == info.shape == want.shape, ref_tensor.name
        assert np.array_equal(got.numpy(), want), ref_tensor.name


# ---- damaged files ---------------------------------------------------------------------


def error_of(path: Path) -> str:
    with pytest.raises(LLMHoodError) as error:
        read_gguf(path)
    return str(error.value)


def patched(path: Path, at: int, new: bytes) -> Path:
    data = bytearray(path.read_bytes())
    data[at : at + len(new)] = new
    out = path.with_name("patched.gguf")
    out.write_bytes(bytes(data))
    return out


def cut(path: Path, size: int) -> Path:
    out = path.with_name("cut.gguf")
    out.write_bytes(path.read_bytes()[:size])
    return out


def offset_of(path: Path, needle: bytes) -> int:
    data = path.read_bytes()
    assert data.count(needle) == 1
    return data.index(needle)


def tensor_info_offset(path: Path, name: str) -> int:
    """Offset of the n_dims field of a tensor info, found without our parser."""
    return offset_of(path, struct.pack("<Q", len(name)) + name.encode()) + 8 + len(name)


def test_missing_path(tmp_path):
    message = error_of(tmp_path / "nope.gguf")
    assert "nope.gguf" in message and "does not exist" in message


def test_directory(tmp_path):
    assert "directory" in error_of(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    assert "empty" in error_of(path)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"PK\x03\x04" + bytes(60), ["50 4b 03 04", "zip"]),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n", ["git lfs pull"]),
        (b"<!DOCTYPE html><html>Not Found</html>", ["HTML"]),
        (b"GG", ["b'GG'"]),
    ],
)
def test_bad_magic(tmp_path, head, expected):
    path = tmp_path / "model.gguf"
    path.write_bytes(head)
    message = error_of(path)
    assert "not a GGUF file" in message and "47 47 55 46" in message
    for text in expected:
        assert text in message


@pytest.mark.parametrize(
    ("version", "expected"),
    [(1, "version 1"), (99, "version is 99"), (0x03000000, "big-endian")],
)
def test_unsupported_version(small_gguf, version, expected):
    message = error_of(patched(small_gguf, 4, struct.pack("<I", version)))
    assert "unsupported GGUF version" in message and expected in message
    assert "2 and 3" in message


def test_truncated_in_metadata(small_gguf):
    start = offset_of(small_gguf, LONG_STRING.encode())
    message = error_of(cut(small_gguf, start + 10))
    assert "truncated" in message
    assert f"expected {len(LONG_STRING)} bytes" in message
    assert f"at offset {start}" in message
    assert f"ends at offset {start + 10}" in message
    assert "test.long_string" in message


def test_truncated_in_tensor_infos(small_gguf):
    at = tensor_info_offset(small_gguf, "q8_0.weight")
    message = error_of(cut(small_gguf, at + 2))
    assert "truncated" in message and "q8_0.weight" in message
    assert "expected 4 bytes for the number of dimensions" in message
    assert f"at offset {at}, but the file ends at offset {at + 2}" in message


def test_truncated_in_tensor_data(small_gguf):
    last = gguf.GGUFReader(small_gguf).tensors[-1]
    end = last.data_offset + last.n_bytes  # the writer pads after it, so cut before this
    message = error_of(cut(small_gguf, end - 10))
    assert "truncated" in message
    assert last.name in message and f"spans bytes {last.data_offset} to {end}" in message
    assert f"file ends at offset {end - 10}" in message
    assert "download it again" in message


@pytest.mark.real
def test_truncated_real_file(smollm2_gguf, tmp_path):
    with smollm2_gguf.open("rb") as file:
        head = file.read(2_000_000)
    size = head.index(b"tokenizer.ggml.tokens") + 100_000  # inside the vocabulary
    path = tmp_path / "cut.gguf"
    path.write_bytes(head[:size])
    message = error_of(path)
    assert "truncated" in message and "tokenizer.ggml.tokens" in message
    assert f"ends at offset {size}" in message


def test_unknown_tensor_type_id(small_gguf):
    type_at = tensor_info_offset(small_gguf, "q8_0.weight") + 4 + 2 * 8
    message = error_of(patched(small_gguf, type_at, struct.pack("<I", 99)))
    assert "corrupt" in message and "unknown ggml tensor type id 99" in message
    assert f"offset {type_at}" in message and "q8_0.weight" in message
    assert "12 (Q4_K)" in message


def test_too_many_dimensions(small_gguf):
    at = tensor_info_offset(small_gguf, "f32.weight")
    message = error_of(patched(small_gguf, at, struct.pack("<I", 7)))
    assert "7 dimensions" in message and f"offset {at}" in message


def test_misaligned_tensor_offset(small_gguf):
    at = tensor_info_offset(small_gguf, "f32.weight") + 4 + 2 * 8 + 4
    (offset,) = struct.unpack("<Q", small_gguf.read_bytes()[at : at + 8])
    message = error_of(patched(small_gguf, at, struct.pack("<Q", offset + 1)))
    assert "not a multiple of the alignment 32" in message


def test_unknown_metadata_value_type(small_gguf):
    at = offset_of(small_gguf, b"test.patch_type") + len("test.patch_type")
    message = error_of(patched(small_gguf, at, struct.pack("<I", 77)))
    assert "unknown metadata value type id 77" in message
    assert "test.patch_type" in message and f"offset {at}" in message


def test_absurd_string_length(small_gguf):
    at = offset_of(small_gguf, LONG_STRING.encode()) - 8
    message = error_of(patched(small_gguf, at, struct.pack("<Q", 2**60)))
    assert "corrupt" in message and str(2**60) in message
    assert "more than the whole file" in message and f"offset {at}" in message


def test_invalid_utf8(small_gguf):
    at = offset_of(small_gguf, "héllo".encode())
    message = error_of(patched(small_gguf, at + 1, b"\xff"))
    assert "UTF-8" in message and "test.string" in message


def test_duplicate_key(small_gguf):
    at = offset_of(small_gguf, b"test.dup_b")
    message = error_of(patched(small_gguf, at, b"test.dup_a"))
    assert "'test.dup_a' appears twice" in message


def test_known_but_unsupported_type_fails_on_load(tmp_path):
    iq2 = RNG.integers(0, 256, size=(2, 66), dtype=np.uint8)
    path = write_gguf(tmp_path / "iq2.gguf", {"iq2.weight": (iq2, GGMLType.IQ2_XXS, None)})
    model = read_gguf(path)
    info = model.tensors["iq2.weight"]
    assert info.ggml_type == GGMLType.IQ2_XXS and info.shape == (2, 256)
    assert np.array_equal(model.raw("iq2.weight"), iq2.ravel())
    with pytest.raises(LLMHoodError) as error:
        model.load("iq2.weight")
    message = str(error.value)
    assert "iq2.weight" in message and "IQ2_XXS" in message
    assert "Q4_K" in message and "Q8_0" in message


def test_unknown_tensor_name(small_gguf):
    model: GGUFFile = read_gguf(small_gguf)
    with pytest.raises(LLMHoodError, match=r"no tensor named 'q8_0\.weigth'.*q8_0\.weight"):
        model.load("q8_0.weigth")
