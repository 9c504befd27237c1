#!/usr/bin/python3
"""Check an ONNX file with PyTorch's ONNX tooling and run it with NumPy.

    check_onnx.py MODEL.onnx                          onnx.checker only
    check_onnx.py MODEL.onnx IN.f32 N,C,H,W OUT.f32   check, then run the graph
                                                      on IN (raw float32, C
                                                      order) and write OUT
    check_onnx.py --selftest                          run every model of
                                                      manifest.json against
                                                      its PyTorch reference

Debian 12 has python3-onnx (1.12) but neither onnxruntime nor onnx's
reference evaluator (onnx 1.13+), so this file carries a small evaluator of
the ops that Conferral's exports and the generator's test models use,
computed in float64. --selftest holds it to PyTorch's outputs.
"""

import json
import os
import sys

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def windows(x, k, s):
    """(N, C, H, W) → (N, C, Ho, Wo, kh, kw) windows with strides s."""
    return sliding_window_view(x, tuple(k), axis=(2, 3))[:, :, ::s[0], ::s[1]]


def conv(x, w, b, a):
    k = a.get("kernel_shape", w.shape[2:])
    s = a.get("strides", [1, 1])
    p = a.get("pads", [0, 0, 0, 0])
    if any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("auto_pad", b"NOTSET") != b"NOTSET":
        raise ValueError("Conv: dilation and auto_pad are not supported")
    g = a.get("group", 1)
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])))
    win = windows(x, k, s)
    n, c, ho, wo = win.shape[:4]
    o = w.shape[0]
    win = win.reshape(n, g, c // g, ho, wo, k[0], k[1])
    y = np.einsum("ngchwij,gocij->ngohw", win, w.reshape(g, o // g, c // g, k[0], k[1]), optimize=True).reshape(n, o, ho, wo)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def pool(x, a, kind):
    k, s = a["kernel_shape"], a.get("strides", [1, 1])
    p = list(a.get("pads", [0, 0, 0, 0]))
    if any(p) and kind == "avg" and not a.get("count_include_pad", 0):
        raise ValueError("AveragePool: padding without count_include_pad is not supported")
    if a.get("ceil_mode", 0):
        for d in range(2):
            size = x.shape[2 + d] + p[d] + p[d + 2]
            out = -(-(size - k[d]) // s[d]) + 1
            p[d + 2] += (out - 1) * s[d] + k[d] - size
    fill = -np.inf if kind == "max" else 0.0
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])), constant_values=fill)
    win = windows(x, k, s)
    return win.max(axis=(4, 5)) if kind == "max" else win.mean(axis=(4, 5))


def clip(x, lo, hi):
    return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def reduce_mean(x, a, axes):
    axes = a.get("axes", axes)
    return x.mean(axis=None if axes is None else tuple(int(v) for v in axes), keepdims=bool(a.get("keepdims", 1)))


def pad(x, pads, value, a):
    if a.get("mode", b"constant") != b"constant":
        raise ValueError("Pad: only constant mode is supported")
    pads = a.get("pads", pads)
    r = x.ndim
    return np.pad(x, [(int(pads[i]), int(pads[i + r])) for i in range(r)], constant_values=0.0 if value is None else value)


def unsqueeze(x, axes):
    for ax in sorted(int(v) for v in axes):
        x = np.expand_dims(x, ax)
    return x


def run(model, x):
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    env = {t.name: numpy_helper.to_array(t).astype(np.float64) if t.data_type == onnx.TensorProto.FLOAT
           else numpy_helper.to_array(t) for t in model.graph.initializer}
    env[model.graph.input[0].name] = x.astype(np.float64)
    for node in model.graph.node:
        a = attrs(node)
        i = [env[n] if n else None for n in node.input] + [None] * 3
        op = node.op_type
        if op == "Conv":
            y = conv(i[0], i[1], i[2], a)
        elif op == "BatchNormalization":
            eps = a.get("epsilon", 1e-5)
            sh = (1, -1) + (1,) * (i[0].ndim - 2)
            y = (i[0] - i[3].reshape(sh)) / np.sqrt(i[4].reshape(sh) + eps) * i[1].reshape(sh) + i[2].reshape(sh)
        elif op == "Relu":
            y = np.maximum(i[0], 0)
        elif op == "Clip":
            y = clip(i[0], a.get("min"), a.get("max")) if opset < 11 else clip(i[0], i[1], i[2])
        elif op == "HardSigmoid":
            y = np.clip(a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5), 0, 1)
        elif op == "HardSwish":
            y = i[0] * np.clip(i[0] / 6 + 0.5, 0, 1)
        elif op in ("Add", "Sub", "Mul", "Div"):
            y = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](i[0], i[1])
        elif op == "MatMul":
            y = np.matmul(i[0], i[1])
        elif op == "Gemm":
            A = i[0].T if a.get("transA", 0) else i[0]
            B = i[1].T if a.get("transB", 0) else i[1]
            y = a.get("alpha", 1.0) * (A @ B) + (0 if i[2] is None else a.get("beta", 1.0) * i[2])
        elif op == "MaxPool":
            y = pool(i[0], a, "max")
        elif op == "AveragePool":
            y = pool(i[0], a, "avg")
        elif op == "GlobalAveragePool":
            y = i[0].mean(axis=(2, 3), keepdims=True)
        elif op == "Flatten":
            ax = a.get("axis", 1)
            y = i[0].reshape(int(np.prod(i[0].shape[:ax])), -1)
        elif op == "Concat":
            y = np.concatenate([env[n] for n in node.input], axis=a["axis"])
        elif op == "Dropout":
            y = i[0]
        elif op == "Transpose":
            y = np.transpose(i[0], a.get("perm"))
        elif op == "ReduceMean":
            y = reduce_mean(i[0], a, None if i[1] is None else i[1])
        elif op == "Softmax":
            y = softmax(i[0], a.get("axis", 1 if opset < 13 else -1))
        elif op == "Constant":
            y = numpy_helper.to_array(a["value"])
        elif op == "Shape":
            y = np.array(i[0].shape, dtype=np.int64)
        elif op == "Gather":
            y = np.take(i[0], i[1].astype(np.int64), axis=a.get("axis", 0))
        elif op == "Unsqueeze":
            y = unsqueeze(i[0], a["axes"] if opset < 13 else i[1])
        elif op == "Reshape":
            shape = [i[0].shape[d] if v == 0 else int(v) for d, v in enumerate(i[1])]
            y = i[0].reshape(shape)
        elif op == "Pad":
            y = pad(i[0], None if i[1] is None else i[1], None if i[2] is None else float(i[2]), a)
        else:
            raise ValueError("op %s is not supported by check_onnx.py" % op)
        env[node.output[0]] = y
    return env[model.graph.output[0].name]


def load_checked(path):
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    return m


def selftest():
    manifest = json.load(open(os.path.join(HERE, "manifest.json")))
    worst = 0.0
    for e in manifest["models"]:
        m = load_checked(os.path.join(HERE, e["file"]))
        x = np.load(os.path.join(HERE, e["ref"]["input"])).astype(np.float64)
        c = x.shape[1]
        g = (e["scale"] * x - np.array(e["mean"]).reshape(1, c, 1, 1)) / np.array(e["std"]).reshape(1, c, 1, 1)
        if e["layout"] == "nhwc":
            g = g.transpose(0, 2, 3, 1)
        y = run(m, g)
        want = np.load(os.path.join(HERE, e["ref"]["output"]))
        err = np.abs(y - want).max() / max(1.0, np.abs(want).max())
        worst = max(worst, err)
        print("%-24s max relative error %.2e" % (e["file"], err))
        if err > 1e-5:
            raise SystemExit("%s: output differs from PyTorch's by %.2e" % (e["file"], err))
    print("all %d models match PyTorch (worst %.2e)" % (len(manifest["models"]), worst))


def main(argv):
    if argv == ["--selftest"]:
        return selftest()
    if len(argv) not in (1, 4):
        raise SystemExit(__doc__)
    m = load_checked(argv[0])
    if len(argv) == 4:
        shape = [int(v) for v in argv[2].split(",")]
        x = np.fromfile(argv[1], dtype="<f4").reshape(shape)
        run(m, x).astype("<f4").tofile(argv[3])


if __name__ == "__main__":
    main(sys.argv[1:])
