"""Writes the small reference files that crates/models/tests/io_formats.rs reads: .npy files in
every header variant numpy produces for the dtypes tessera accepts, and a safetensors file
written by the official `safetensors` package from torch tensors (F32, F16, BF16, I64).

Run from the repository root: python3 scripts/io_fixtures.py  (needs numpy, torch, safetensors;
CI does not run it, the outputs are committed).
"""
import numpy as np
import torch
from safetensors.torch import save_file

out = "tests/fixtures/io/"
a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.5 - 3.0
np.save(out + "f4_c.npy", a)
np.save(out + "f8_fortran.npy", np.asfortranarray(a.astype(np.float64)))
np.save(out + "f4_big_endian.npy", a.astype(">f4"))
np.save(out + "f2.npy", a.astype(np.float16))
np.save(out + "i8_labels.npy", np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.int64))
np.save(out + "u1.npy", np.array([[0, 255], [7, 8]], dtype=np.uint8))
np.save(out + "bool.npy", np.array([True, False, True]))
np.save(out + "scalar.npy", np.float32(2.5))
np.save(out + "c8_complex.npy", np.array([1 + 2j], dtype=np.complex64))
with open(out + "f4_v2.npy", "wb") as f:
    np.lib.format.write_array(f, a, version=(2, 0))

t = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4 - 1
save_file(
    {
        "blocks.0.attn.qkv.weight": t,
        "half": t.to(torch.float16),
        "bf": t.to(torch.bfloat16),
        "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
    },
    out + "torch.safetensors",
    metadata={"format": "pt", "arch": "test"},
)
print("wrote", out)
