"""Compares consumer-gguf-read's output with the gguf Python package (llama.cpp's reader).

Usage: python3 check_gguf.py MODEL.gguf TENSOR_NAME < consumer-output
Exit 0 when every figure agrees, 1 (naming the difference) otherwise.
"""
import sys

import numpy as np
import gguf

path, name = sys.argv[1], sys.argv[2]
got = {}
for line in sys.stdin:
    key, _, rest = line.strip().partition(" ")
    got[key] = rest

r = gguf.GGUFReader(path)
fails = []


def check(what, ours, theirs):
    if str(ours) != str(theirs):
        fails.append(f"{what}: consumer {ours!r}, gguf package {theirs!r}")


arch_field = r.fields["general.architecture"]
arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
check("architecture", got.get("architecture"), arch)
bc = r.fields[f"{arch}.block_count"]
check("block_count", got.get("block_count"), int(bc.parts[bc.data[0]][0]))
# The Python reader lists the header's tensor/kv counts as pseudo-fields (GGUF.*).
check("metadata", got.get("metadata"), len([k for k in r.fields if not k.startswith("GGUF.")]))
check("tensors", got.get("tensors"), len(r.tensors))
t = next(t for t in r.tensors if t.name == name)
check("tensor type", got.get("tensor", "").split()[1], t.tensor_type.name)
check("tensor dims", " ".join(got.get("tensor", "").split()[2:]), " ".join(str(int(d)) for d in t.shape))
values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
check("count", got.get("count"), values.size)
ours = np.array([float(v) for v in got.get("head", "").split()], dtype=np.float32)
if ours.size != min(64, values.size) or not np.array_equal(ours, values[: ours.size]):
    fails.append(f"first values differ: consumer {ours[:4]}, gguf package {values[:4]}")
theirs_sum = float(values.astype(np.float64).sum())
ours_sum = float(got.get("sum", "nan"))
if not abs(ours_sum - theirs_sum) <= 1e-6 * max(1.0, abs(theirs_sum)):
    fails.append(f"sum: consumer {ours_sum}, gguf package {theirs_sum}")
if fails:
    print("consumer-gguf-read disagrees with the gguf package:\n  " + "\n  ".join(fails))
    sys.exit(1)
print(f"consumer-gguf-read agrees with the gguf package on {path} ({name}: {values.size} values)")
