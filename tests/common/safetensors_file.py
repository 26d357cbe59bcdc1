"""Reads a .safetensors file (SPEC §4) without numpy: {name: raw little-endian bytes}."""
import json
import struct


def read_tensor_bytes(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        b, e = entry["data_offsets"]
        out[name] = data[8 + n + b:8 + n + e]
    return out


def read_float32(path):
    """{name: tuple of floats}."""
    return {k: struct.unpack("<%df" % (len(v) // 4), v) for k, v in read_tensor_bytes(path).items()}
