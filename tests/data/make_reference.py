"""Writes tests/data/reference.safetensors with the reference implementation (the
`safetensors` package from PyPI, numpy API), so ONN's reader is checked against a file it
did not write. Run: python3 -m venv v && v/bin/pip install safetensors numpy &&
v/bin/python tests/data/make_reference.py"""
import os

import numpy as np
from safetensors.numpy import save_file

here = os.path.dirname(os.path.abspath(__file__))
bf16_bits = np.array([0x3F80, 0x3FC0, 0xC020], dtype=np.uint16)  # 1.0, 1.5, -2.5 as bf16
tensors = {
    "a_f32": (np.arange(6, dtype=np.float32) * 0.5 - 1.0).reshape(2, 3),
    "c_i64": np.array([1, -2, -9000000000], dtype=np.int64),
    "d_f16": np.array([65504.0, -0.5], dtype=np.float16),
    "e_bool": np.array([False, True, True]),
    "f_empty": np.zeros((0, 4), dtype=np.float32),
}
path = os.path.join(here, "reference.safetensors")
save_file(tensors, path, metadata={"producer": "safetensors-python"})

# numpy has no bfloat16, so the BF16 tensor is appended by hand: its bits go after the
# other tensors and its entry into the header; the reference reader then validates the file.
import json
import struct

with open(path, "rb") as f:
    data = f.read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8 : 8 + n])
body = data[8 + n :]
end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
header["b_bf16"] = {"dtype": "BF16", "shape": [3], "data_offsets": [end, end + 6]}
body = body[:end] + bf16_bits.tobytes()
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * ((8 - len(text) % 8) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + body)

# Read it back with the reference reader to be sure the patched file is valid.
from safetensors import safe_open

with safe_open(path, framework="numpy") as f:
    assert sorted(f.keys()) == ["a_f32", "b_bf16", "c_i64", "d_f16", "e_bool", "f_empty"], f.keys()
print("wrote", path)
