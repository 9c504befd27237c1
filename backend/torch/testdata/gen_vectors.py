#!/usr/bin/python3
"""Generate vectors.json: PyTorch reference results for the Go binding's tests.

Run with Debian's python (it has python3-torch 1.13, the same libtorch the
binding links):

    /usr/bin/python3 backend/torch/testdata/gen_vectors.py

Every case is computed on small, seeded inputs. A case is

    {"name": ..., "op": ..., "tol": ...,
     "inputs":  {name: tensor},       # tensor = {"shape", "dtype", "data"}
     "attrs":   {...},                # op hyper-parameters
     "outputs": {name: tensor},
     "grad_weights": {output: tensor},  # fixed random weights W_o
     "grads":   {input: tensor}}      # d sum_o sum(out_o * W_o) / d input

The Go test (vectors_test.go) dispatches on "op"; a case whose op has no Go
dispatcher fails that test, so adding a case here forces a Go dispatcher and
removing every case of an op is caught too. Values are float32, unrounded:
each float is written as the shortest decimal that reads back as the same
float32.
"""

import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="reduction: .mean. divides")
torch.manual_seed(20240601)

DTYPES = {torch.float32: "float32", torch.int64: "int64", torch.bool: "bool", torch.uint8: "uint8"}


def enc(t):
    t = t.detach().contiguous()
    dt = DTYPES[t.dtype]
    flat = t.reshape(-1)
    if dt == "float32":
        arr = flat.numpy().astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise ValueError("non-finite value in a vector")
        data = [float(str(v)) for v in arr]  # shortest float32 round-trip repr
    elif dt == "bool":
        data = [1 if v else 0 for v in flat.tolist()]
    else:
        data = [int(v) for v in flat.tolist()]
    return {"shape": list(t.shape), "dtype": dt, "data": data}


CASES = []
NAMES = set()


def rn(*shape, scale=1.0):
    return torch.randn(*shape) * scale


def pos(*shape):
    """Positive values in [0.2, 2.2)."""
    return torch.rand(*shape) * 2 + 0.2


def add(name, op, inputs, fn, attrs=None, grad=(), weighted=None, tol=None):
    """Record one case.

    fn(inputs_dict) returns {output_name: tensor}. grad lists the inputs to
    differentiate with respect to; weighted lists the outputs that enter the
    weighted-sum loss (default: every float output).
    """
    if name in NAMES:
        raise ValueError("duplicate case " + name)
    NAMES.add(name)
    attrs = attrs or {}
    ins = {}
    for k, v in inputs.items():
        v = v.detach().clone()
        if k in grad:
            v.requires_grad_(True)
        ins[k] = v
    # Snapshot inputs before the op (batch_norm updates running stats in place).
    enc_inputs = {k: enc(v) for k, v in ins.items()}
    outs = fn(ins)
    case = {"name": name, "op": op, "inputs": enc_inputs, "attrs": attrs,
            "outputs": {k: enc(v) for k, v in outs.items()}}
    if tol is not None:
        case["tol"] = tol
    if grad:
        if weighted is None:
            weighted = [k for k, v in outs.items() if v.dtype == torch.float32]
        ws = {k: torch.randn(outs[k].shape) for k in weighted}
        loss = sum((outs[k] * ws[k]).sum() for k in weighted)
        gs = torch.autograd.grad(loss, [ins[k] for k in grad], allow_unused=True)
        case["grad_weights"] = {k: enc(w) for k, w in ws.items()}
        case["grads"] = {}
        for k, g in zip(grad, gs):
            if g is None:
                g = torch.zeros_like(ins[k])
            case["grads"][k] = enc(g)
    CASES.append(case)


def one(f):
    return lambda i: {"out": f(i)}


# ---------------------------------------------------------------- unary
UNARY = {
    "relu": (torch.relu, lambda: rn(3, 4)),
    "relu6": (F.relu6, lambda: torch.rand(3, 4) * 10 - 2),
    "sigmoid": (torch.sigmoid, lambda: rn(3, 4, scale=2)),
    "tanh": (torch.tanh, lambda: rn(3, 4, scale=2)),
    "exp": (torch.exp, lambda: rn(3, 4)),
    "log": (torch.log, lambda: pos(3, 4)),
    "neg": (torch.neg, lambda: rn(3, 4)),
    "abs": (torch.abs, lambda: rn(3, 4)),
    "sign": (torch.sign, lambda: torch.cat([rn(11), torch.zeros(1)]).reshape(3, 4)),
    "sqrt": (torch.sqrt, lambda: pos(3, 4)),
    "detach": (lambda x: x.detach(), lambda: rn(3, 4)),
    "contiguous": (lambda x: x.contiguous(), lambda: rn(3, 4)),
    "clone": (torch.clone, lambda: rn(3, 4)),
    "square": (torch.square, lambda: rn(3, 4)),
    "hardswish": (F.hardswish, lambda: rn(3, 4, scale=3)),
    "hardsigmoid": (F.hardsigmoid, lambda: rn(3, 4, scale=3)),
    "floor": (torch.floor, lambda: rn(3, 4, scale=3)),
    "round": (torch.round, lambda: rn(3, 4, scale=3)),
    "log1p": (torch.log1p, lambda: torch.rand(3, 4) * 3 - 0.5),
    "reciprocal": (torch.reciprocal, lambda: pos(3, 4) * torch.sign(rn(3, 4))),
}
for op, (f, gen) in UNARY.items():
    add(op, op, {"x": gen()}, one(lambda i, f=f: f(i["x"])),
        grad=() if op == "detach" else ("x",))
# A unary op on a non-contiguous view (a transposed input).
add("contiguous_of_permuted", "permute_contiguous", {"x": rn(3, 4)},
    one(lambda i: i["x"].permute(1, 0).contiguous()), grad=("x",))

# ---------------------------------------------------------------- binary
BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "maximum": torch.maximum, "minimum": torch.minimum, "pow": torch.pow,
    "eq": torch.eq, "gt": torch.gt, "lt": torch.lt, "ge": torch.ge,
    "le": torch.le, "ne": torch.ne,
}
CMP = {"eq", "gt", "lt", "ge", "le", "ne"}


def binary_inputs(op, bshape):
    if op in CMP:  # integral-valued floats so that ties occur
        return torch.round(rn(3, 4, scale=1.5)), torch.round(rn(*bshape, scale=1.5))
    if op == "pow":
        return pos(3, 4), rn(*bshape)
    if op == "div":
        return rn(3, 4), pos(*bshape) * torch.sign(rn(*bshape))
    return rn(3, 4), rn(*bshape)


for op, f in BINARY.items():
    for suffix, bshape in (("", (3, 4)), ("_bcast", (4,))):
        a, b = binary_inputs(op, bshape)
        add(op + suffix, op, {"a": a, "b": b}, one(lambda i, f=f: f(i["a"], i["b"])),
            grad=() if op in CMP else ("a", "b"))
add("eq_int64", "eq", {"a": torch.tensor([0, 1, 2, 3, 1, 2]), "b": torch.tensor([0, 2, 2, 1, 1, 0])},
    one(lambda i: torch.eq(i["a"], i["b"])))
add("add_int64", "add", {"a": torch.tensor([[1, -2, 3]]), "b": torch.tensor([[10], [20]])},
    one(lambda i: torch.add(i["a"], i["b"])))
add("matmul_2d", "matmul", {"a": rn(3, 4), "b": rn(4, 5)},
    one(lambda i: torch.matmul(i["a"], i["b"])), grad=("a", "b"))
add("matmul_batched", "matmul", {"a": rn(2, 3, 4), "b": rn(4, 5)},
    one(lambda i: torch.matmul(i["a"], i["b"])), grad=("a", "b"))
add("matmul_bmm", "matmul", {"a": rn(2, 3, 4), "b": rn(2, 4, 2)},
    one(lambda i: torch.matmul(i["a"], i["b"])), grad=("a", "b"))
add("matmul_vec", "matmul", {"a": rn(3, 4), "b": rn(4)},
    one(lambda i: torch.matmul(i["a"], i["b"])), grad=("a", "b"))

# ---------------------------------------------------------------- scalar
SCALAR = [
    ("add_scalar", lambda x, s: x + s, 1.5, rn),
    ("sub_scalar", lambda x, s: x - s, 0.75, rn),
    ("mul_scalar", lambda x, s: x * s, -2.5, rn),
    ("div_scalar", lambda x, s: x / s, 3.0, rn),
    ("pow_scalar", lambda x, s: torch.pow(x, s), 2.0, rn),
    ("pow_scalar", lambda x, s: torch.pow(x, s), 0.5, lambda *sh: pos(*sh)),
    ("pow_scalar", lambda x, s: torch.pow(x, s), 3.0, rn),
    ("eq_scalar", lambda x, s: torch.eq(x, s), 1.0, lambda *sh: torch.round(rn(*sh, scale=1.5))),
    ("gt_scalar", lambda x, s: torch.gt(x, s), 0.0, lambda *sh: torch.round(rn(*sh, scale=1.5))),
    ("lt_scalar", lambda x, s: torch.lt(x, s), 0.0, lambda *sh: torch.round(rn(*sh, scale=1.5))),
    ("ge_scalar", lambda x, s: torch.ge(x, s), 0.0, lambda *sh: torch.round(rn(*sh, scale=1.5))),
    ("le_scalar", lambda x, s: torch.le(x, s), 0.0, lambda *sh: torch.round(rn(*sh, scale=1.5))),
    ("rsub_scalar", lambda x, s: s - x, 1.0, rn),
    ("leaky_relu", lambda x, s: F.leaky_relu(x, s), 0.1, rn),
]
for op, f, s, gen in SCALAR:
    cmp = op[:2] in ("eq", "gt", "lt", "ge", "le")
    add("%s_%g" % (op, s), op, {"x": gen(3, 4)}, one(lambda i, f=f, s=s: f(i["x"], s)),
        attrs={"s": s}, grad=() if cmp else ("x",))

# ---------------------------------------------------------------- reductions
x234 = lambda: rn(2, 3, 4)  # noqa: E731
add("sum_all", "sum", {"x": x234()}, one(lambda i: i["x"].sum()), grad=("x",))
add("sum_bool", "sum", {"x": rn(3, 4) > 0}, one(lambda i: i["x"].sum()))
add("mean_all", "mean", {"x": x234()}, one(lambda i: i["x"].mean()), grad=("x",))
REDUCE_DIMS = {
    "sum_dims": lambda x, d, k: torch.sum(x, d, keepdim=k),
    "mean_dims": lambda x, d, k: torch.mean(x, d, keepdim=k),
    "amax": lambda x, d, k: torch.amax(x, d, keepdim=k),
    "amin": lambda x, d, k: torch.amin(x, d, keepdim=k),
    "logsumexp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k),
}
for op, f in REDUCE_DIMS.items():
    for dims, keep in (([1], False), ([0, 2], True), ([-1], False)):
        add("%s_%s_%s" % (op, "_".join(map(str, dims)), "keep" if keep else "drop"), op,
            {"x": x234()}, one(lambda i, f=f, d=dims, k=keep: f(i["x"], d, k)),
            attrs={"dims": dims, "keep": keep}, grad=("x",))
for op in ("amax", "amin"):
    add(op + "_all", op, {"x": x234()},
        one(lambda i, op=op: getattr(torch, op)(i["x"], ())),
        attrs={"dims": [], "keep": False}, grad=("x",))
for op in ("argmax", "argmin"):
    for dim, keep in ((1, False), (-1, True), (0, False)):
        add("%s_%d_%s" % (op, dim, "keep" if keep else "drop"), op, {"x": x234()},
            one(lambda i, op=op, d=dim, k=keep: getattr(torch, op)(i["x"], d, keepdim=k)),
            attrs={"dim": dim, "keep": keep})

# ---------------------------------------------------------------- clamp, where
add("clamp_both", "clamp", {"x": rn(3, 4)}, one(lambda i: torch.clamp(i["x"], -0.5, 0.5)),
    attrs={"lo": -0.5, "hi": 0.5}, grad=("x",))
add("clamp_min", "clamp_min", {"x": rn(3, 4)}, one(lambda i: torch.clamp(i["x"], min=0.1)),
    attrs={"lo": 0.1}, grad=("x",))
add("clamp_max", "clamp_max", {"x": rn(3, 4)}, one(lambda i: torch.clamp(i["x"], max=-0.2)),
    attrs={"hi": -0.2}, grad=("x",))
add("clamp_tensor", "clamp_tensor", {"x": rn(3, 4), "lo": rn(3, 4) - 0.5, "hi": rn(4) + 0.5},
    one(lambda i: torch.clamp(i["x"], i["lo"], i["hi"])), grad=("x",))
add("clamp_tensor_lo_only", "clamp_tensor", {"x": rn(3, 4), "lo": rn(3, 4)},
    one(lambda i: torch.clamp(i["x"], min=i["lo"])), grad=("x",))
add("where", "where", {"cond": rn(3, 4) > 0, "a": rn(3, 4), "b": rn(3, 4)},
    one(lambda i: torch.where(i["cond"], i["a"], i["b"])), grad=("a", "b"))
add("where_bcast", "where", {"cond": rn(3, 1) > 0, "a": rn(3, 4), "b": rn(1, 4)},
    one(lambda i: torch.where(i["cond"], i["a"], i["b"])), grad=("a", "b"))

# ---------------------------------------------------------------- shapes
add("reshape", "reshape", {"x": x234()}, one(lambda i: i["x"].reshape(4, -1)),
    attrs={"shape": [4, -1]}, grad=("x",))
add("flatten", "flatten", {"x": x234()}, one(lambda i: i["x"].reshape(2, -1)), grad=("x",))
add("permute", "permute", {"x": x234()}, one(lambda i: i["x"].permute(2, 0, 1)),
    attrs={"dims": [2, 0, 1]}, grad=("x",))
add("expand", "expand", {"x": rn(3, 1)}, one(lambda i: i["x"].expand(3, 4)),
    attrs={"shape": [3, 4]}, grad=("x",))
add("expand_new_dim", "expand", {"x": rn(3, 1)}, one(lambda i: i["x"].expand(2, -1, 4)),
    attrs={"shape": [2, -1, 4]}, grad=("x",))
add("narrow", "narrow", {"x": x234()}, one(lambda i: i["x"].narrow(2, 1, 2)),
    attrs={"dim": 2, "start": 1, "length": 2}, grad=("x",))
add("narrow_dim0", "narrow", {"x": x234()}, one(lambda i: i["x"].narrow(0, 1, 1)),
    attrs={"dim": 0, "start": 1, "length": 1}, grad=("x",))
add("index_select", "index_select", {"x": rn(4, 3), "index": torch.tensor([2, 0, 2])},
    one(lambda i: torch.index_select(i["x"], 0, i["index"])), attrs={"dim": 0}, grad=("x",))
add("index_select_dim1", "index_select", {"x": x234(), "index": torch.tensor([3, 1])},
    one(lambda i: torch.index_select(i["x"], 2, i["index"])), attrs={"dim": 2}, grad=("x",))
add("gather", "gather", {"x": rn(3, 5), "index": torch.tensor([[0, 4], [2, 2], [1, 3]])},
    one(lambda i: torch.gather(i["x"], 1, i["index"])), attrs={"dim": 1}, grad=("x",))
add("gather_dim0", "gather", {"x": rn(3, 4), "index": torch.tensor([[2, 0, 1, 1]])},
    one(lambda i: torch.gather(i["x"], 0, i["index"])), attrs={"dim": 0}, grad=("x",))
add("cat_dim0", "cat", {"x0": rn(2, 3), "x1": rn(1, 3), "x2": rn(3, 3)},
    one(lambda i: torch.cat([i["x0"], i["x1"], i["x2"]], 0)), attrs={"dim": 0},
    grad=("x0", "x1", "x2"))
add("cat_dim1", "cat", {"x0": rn(2, 3, 2), "x1": rn(2, 1, 2)},
    one(lambda i: torch.cat([i["x0"], i["x1"]], 1)), attrs={"dim": 1}, grad=("x0", "x1"))
add("cat_neg_dim", "cat", {"x0": rn(2, 2), "x1": rn(2, 3)},
    one(lambda i: torch.cat([i["x0"], i["x1"]], -1)), attrs={"dim": -1}, grad=("x0", "x1"))
add("one_hot", "one_hot", {"x": torch.tensor([0, 2, 1, 4, 2])},
    one(lambda i: F.one_hot(i["x"], 5)), attrs={"classes": 5})
add("one_hot_2d", "one_hot", {"x": torch.tensor([[0, 1], [3, 2]])},
    one(lambda i: F.one_hot(i["x"], 4)), attrs={"classes": 4})


def topk(k, dim):
    def f(i):
        v, ix = torch.topk(i["x"], k, dim)
        return {"values": v, "indices": ix}
    return f


add("topk_dim1", "topk", {"x": rn(3, 6)}, topk(3, 1), attrs={"k": 3, "dim": 1}, grad=("x",))
add("topk_dim0", "topk", {"x": rn(4, 3)}, topk(2, 0), attrs={"k": 2, "dim": 0}, grad=("x",))
add("topk_last", "topk", {"x": x234()}, topk(1, -1), attrs={"k": 1, "dim": -1}, grad=("x",))

# ---------------------------------------------------------------- conv
CONV_TOL = 1e-4


def conv_case(name, x, w, b, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    ins = {"x": x, "w": w}
    grad = ["x", "w"]
    if b is not None:
        ins["b"] = b
        grad.append("b")
    add(name, "conv2d", ins,
        one(lambda i: F.conv2d(i["x"], i["w"], i.get("b"), stride, padding, dilation, groups)),
        attrs={"stride": list(stride), "padding": list(padding), "dilation": list(dilation),
               "groups": groups}, grad=tuple(grad), tol=CONV_TOL)


conv_case("conv2d_basic", rn(2, 3, 6, 6), rn(4, 3, 3, 3), rn(4))
conv_case("conv2d_stride2_pad1", rn(2, 3, 7, 7), rn(4, 3, 3, 3), rn(4), stride=(2, 2), padding=(1, 1))
conv_case("conv2d_dilation2", rn(1, 2, 8, 8), rn(3, 2, 3, 3), rn(3), padding=(2, 2), dilation=(2, 2))
conv_case("conv2d_groups2", rn(2, 4, 5, 5), rn(6, 2, 3, 3), rn(6), padding=(1, 1), groups=2)
conv_case("conv2d_depthwise", rn(1, 3, 5, 5), rn(3, 1, 3, 3), None, padding=(1, 1), groups=3)
conv_case("conv2d_asym_nobias", rn(2, 2, 6, 7), rn(3, 2, 3, 2), None, stride=(1, 2), padding=(0, 1))


def convt_case(name, x, w, b, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
               dilation=(1, 1), groups=1):
    ins = {"x": x, "w": w}
    grad = ["x", "w"]
    if b is not None:
        ins["b"] = b
        grad.append("b")
    add(name, "conv_transpose2d", ins,
        one(lambda i: F.conv_transpose2d(i["x"], i["w"], i.get("b"), stride, padding,
                                         output_padding, groups, dilation)),
        attrs={"stride": list(stride), "padding": list(padding),
               "output_padding": list(output_padding), "dilation": list(dilation),
               "groups": groups}, grad=tuple(grad), tol=CONV_TOL)


convt_case("conv_transpose2d_basic", rn(2, 3, 4, 4), rn(3, 2, 3, 3), rn(2))
convt_case("conv_transpose2d_stride2_outpad", rn(1, 3, 4, 4), rn(3, 4, 3, 3), rn(4),
           stride=(2, 2), padding=(1, 1), output_padding=(1, 1))
convt_case("conv_transpose2d_groups_dilation", rn(1, 4, 3, 3), rn(4, 1, 2, 2), None,
           dilation=(2, 2), groups=2)

# ---------------------------------------------------------------- batch norm


def bn_case(name, x, affine, training, stats=True, momentum=0.1, eps=1e-5):
    c = x.shape[1]
    ins = {"x": x}
    grad = ["x"]
    if affine:
        ins["w"] = pos(c)
        ins["b"] = rn(c)
        grad += ["w", "b"]
    if stats:
        ins["running_mean"] = rn(c, scale=0.5)
        ins["running_var"] = pos(c)

    def f(i):
        out = F.batch_norm(i["x"], i.get("running_mean"), i.get("running_var"), i.get("w"),
                           i.get("b"), training, momentum, eps)
        r = {"out": out}
        if stats:  # the running statistics after the op (updated in place in training)
            r["running_mean"] = i["running_mean"]
            r["running_var"] = i["running_var"]
        return r

    add(name, "batch_norm", ins, f, attrs={"training": training, "momentum": momentum, "eps": eps},
        grad=tuple(grad), weighted=["out"], tol=CONV_TOL)


bn_case("batch_norm_train", rn(4, 3, 3, 3, scale=2) + 1, affine=True, training=True)
bn_case("batch_norm_train_momentum", rn(5, 2, 2, 3) - 1, affine=True, training=True, momentum=0.3,
        eps=1e-3)
bn_case("batch_norm_train_1d", rn(8, 3), affine=True, training=True)
bn_case("batch_norm_train_noaffine", rn(3, 2, 3, 3), affine=False, training=True)
bn_case("batch_norm_train_nostats", rn(3, 2, 3, 3), affine=True, training=True, stats=False)
bn_case("batch_norm_eval", rn(4, 3, 3, 3, scale=2) + 1, affine=True, training=False)
bn_case("batch_norm_eval_1d", rn(6, 4), affine=False, training=False)

# ---------------------------------------------------------------- linear
add("linear", "linear", {"x": rn(4, 5), "w": rn(3, 5), "b": rn(3)},
    one(lambda i: F.linear(i["x"], i["w"], i["b"])), grad=("x", "w", "b"), tol=CONV_TOL)
add("linear_nobias", "linear", {"x": rn(4, 5), "w": rn(3, 5)},
    one(lambda i: F.linear(i["x"], i["w"])), grad=("x", "w"), tol=CONV_TOL)
add("linear_3d", "linear", {"x": rn(2, 3, 5), "w": rn(2, 5), "b": rn(2)},
    one(lambda i: F.linear(i["x"], i["w"], i["b"])), grad=("x", "w", "b"), tol=CONV_TOL)

# ---------------------------------------------------------------- pooling


def pool_attrs(kernel, stride, padding, dilation=None, ceil_mode=False, count_include_pad=None):
    a = {"kernel": list(kernel), "padding": list(padding), "ceil_mode": ceil_mode}
    if stride is not None:
        a["stride"] = list(stride)
    if dilation is not None:
        a["dilation"] = list(dilation)
    if count_include_pad is not None:
        a["count_include_pad"] = count_include_pad
    return a


def max_case(name, x, kernel, stride, padding, dilation=(1, 1), ceil_mode=False):
    add(name, "max_pool2d", {"x": x},
        one(lambda i: F.max_pool2d(i["x"], kernel, stride, padding, dilation, ceil_mode)),
        attrs=pool_attrs(kernel, stride, padding, dilation, ceil_mode), grad=("x",), tol=CONV_TOL)


max_case("max_pool2d_k2", rn(2, 2, 6, 6), (2, 2), None, (0, 0))
max_case("max_pool2d_k3s2p1", rn(1, 3, 7, 7), (3, 3), (2, 2), (1, 1))
max_case("max_pool2d_dilation", rn(1, 2, 7, 7), (2, 2), (1, 1), (0, 0), dilation=(2, 2))
max_case("max_pool2d_ceil", rn(1, 2, 7, 7), (2, 2), (2, 2), (0, 0), ceil_mode=True)
max_case("max_pool2d_rect", rn(1, 1, 6, 8), (2, 3), (2, 1), (1, 0))


def avg_case(name, x, kernel, stride, padding, ceil_mode=False, count_include_pad=True):
    add(name, "avg_pool2d", {"x": x},
        one(lambda i: F.avg_pool2d(i["x"], kernel, stride, padding, ceil_mode, count_include_pad)),
        attrs=pool_attrs(kernel, stride, padding, None, ceil_mode, count_include_pad),
        grad=("x",), tol=CONV_TOL)


avg_case("avg_pool2d_k2", rn(2, 2, 6, 6), (2, 2), None, (0, 0))
avg_case("avg_pool2d_k3s2p1_incl", rn(1, 3, 7, 7), (3, 3), (2, 2), (1, 1))
avg_case("avg_pool2d_k3s2p1_excl", rn(1, 3, 7, 7), (3, 3), (2, 2), (1, 1), count_include_pad=False)
avg_case("avg_pool2d_ceil", rn(1, 2, 7, 7), (3, 3), (2, 2), (1, 1), ceil_mode=True,
         count_include_pad=False)

for size in ((3, 3), (1, 1), (2, 4)):
    add("adaptive_avg_pool2d_%dx%d" % size, "adaptive_avg_pool2d", {"x": rn(2, 2, 7, 7)},
        one(lambda i, s=size: F.adaptive_avg_pool2d(i["x"], s)), attrs={"size": list(size)},
        grad=("x",), tol=CONV_TOL)

# ---------------------------------------------------------------- dropout
add("dropout_eval", "dropout", {"x": rn(3, 4)}, one(lambda i: F.dropout(i["x"], 0.5, False)),
    attrs={"p": 0.5, "training": False}, grad=("x",))


def dropout_seeded(p, seed):
    def f(i):
        torch.manual_seed(seed)
        return {"out": F.dropout(i["x"], p, True)}
    return f


# Same libtorch and generator as the binding: the mask follows from the seed.
add("dropout_train_seeded", "dropout", {"x": rn(4, 8)}, dropout_seeded(0.3, 7),
    attrs={"p": 0.3, "training": True, "seed": 7}, grad=("x",))

# ---------------------------------------------------------------- softmax
for op, f in (("softmax", F.softmax), ("log_softmax", F.log_softmax)):
    add(op + "_dim1", op, {"x": rn(3, 5, scale=2)}, one(lambda i, f=f: f(i["x"], 1)),
        attrs={"dim": 1}, grad=("x",))
    add(op + "_dim0", op, {"x": rn(3, 5, scale=2)}, one(lambda i, f=f: f(i["x"], 0)),
        attrs={"dim": 0}, grad=("x",))
    add(op + "_3d_last", op, {"x": x234()}, one(lambda i, f=f: f(i["x"], -1)),
        attrs={"dim": -1}, grad=("x",))
    add(op + "_large", op, {"x": rn(2, 4, scale=30)}, one(lambda i, f=f: f(i["x"], 1)),
        attrs={"dim": 1}, grad=("x",))

# ---------------------------------------------------------------- losses
RED = ["none", "mean", "sum"]
for r in RED:
    add("cross_entropy_hard_" + r, "cross_entropy",
        {"logits": rn(5, 4, scale=2), "target": torch.tensor([0, 3, 1, 1, 2])},
        one(lambda i, r=r: F.cross_entropy(i["logits"], i["target"], reduction=r)),
        attrs={"reduction": r}, grad=("logits",))
    add("cross_entropy_soft_" + r, "cross_entropy",
        {"logits": rn(5, 4, scale=2), "target": torch.softmax(rn(5, 4, scale=2), 1)},
        one(lambda i, r=r: F.cross_entropy(i["logits"], i["target"], reduction=r)),
        attrs={"reduction": r}, grad=("logits", "target"))
add("cross_entropy_hard_spatial", "cross_entropy",
    {"logits": rn(2, 3, 2, 2), "target": torch.randint(0, 3, (2, 2, 2))},
    one(lambda i: F.cross_entropy(i["logits"], i["target"])), attrs={"reduction": "mean"},
    grad=("logits",))
for r in RED:
    for log_target in (False, True):
        def kl(i, r=r, lt=log_target):
            return {"out": F.kl_div(i["logp"], i["target"], reduction=r, log_target=lt)}
        tgt = torch.softmax(rn(4, 5), 1)
        if log_target:
            tgt = torch.log(tgt)
        add("kl_div_%s%s" % (r, "_logtarget" if log_target else ""), "kl_div",
            {"logp": torch.log_softmax(rn(4, 5), 1), "target": tgt}, kl,
            attrs={"reduction": r, "log_target": log_target}, grad=("logp", "target"))

# ---------------------------------------------------------------- pad
PAD = [
    ("pad_constant_last", (1, 2, 4, 5), [1, 2], "constant", 0.5),
    ("pad_constant_2d", (1, 2, 4, 5), [1, 1, 2, 0], "constant", 0.0),
    ("pad_constant_negative", (2, 3, 4), [-1, 2], "constant", -1.0),
    ("pad_reflect_2d", (1, 2, 4, 5), [2, 1, 1, 2], "reflect", 0.0),
    ("pad_reflect_1d", (2, 3, 6), [2, 3], "reflect", 0.0),
    ("pad_replicate_2d", (1, 2, 4, 5), [1, 2, 3, 0], "replicate", 0.0),
    ("pad_replicate_1d", (2, 3, 4), [0, 3], "replicate", 0.0),
]
for name, shape, p, mode, v in PAD:
    add(name, "pad", {"x": rn(*shape)},
        one(lambda i, p=p, mode=mode, v=v: F.pad(i["x"], p, mode, v) if mode == "constant"
            else F.pad(i["x"], p, mode)),
        attrs={"pad": p, "mode": mode, "value": v}, grad=("x",))

# ---------------------------------------------------------------- conversions, factories
add("to_int64", "to", {"x": rn(3, 4, scale=3)}, one(lambda i: i["x"].to(torch.int64)),
    attrs={"dtype": "int64"})
add("to_float32_from_int64", "to", {"x": torch.tensor([[-3, 0, 7], [1, 2, 100000]])},
    one(lambda i: i["x"].to(torch.float32)), attrs={"dtype": "float32"})
add("to_bool", "to", {"x": torch.round(rn(3, 4))}, one(lambda i: i["x"].to(torch.bool)),
    attrs={"dtype": "bool"})
add("to_float32_from_bool", "to", {"x": rn(3, 4) > 0}, one(lambda i: i["x"].to(torch.float32)),
    attrs={"dtype": "float32"})
add("to_uint8", "to", {"x": torch.rand(3, 4) * 255}, one(lambda i: i["x"].to(torch.uint8)),
    attrs={"dtype": "uint8"})
add("to_float32_grad", "to", {"x": rn(3, 4)}, one(lambda i: i["x"].to(torch.float32)),
    attrs={"dtype": "float32"}, grad=("x",))
add("full", "full", {}, one(lambda i: torch.full((2, 3), -1.25)),
    attrs={"shape": [2, 3], "value": -1.25, "dtype": "float32"})
add("full_int64", "full", {}, one(lambda i: torch.full((4,), 7, dtype=torch.int64)),
    attrs={"shape": [4], "value": 7, "dtype": "int64"})
add("zeros", "zeros", {}, one(lambda i: torch.zeros(2, 2)), attrs={"shape": [2, 2]})
add("ones", "ones", {}, one(lambda i: torch.ones(3, 1, 2)), attrs={"shape": [3, 1, 2]})


def seeded(f, shape, seed):
    def g(i):
        torch.manual_seed(seed)
        return {"out": f(*shape)}
    return g


add("rand_seeded", "rand", {}, seeded(torch.rand, (3, 5), 42), attrs={"shape": [3, 5], "seed": 42})
add("randn_seeded", "randn", {}, seeded(torch.randn, (4, 5), 1234),
    attrs={"shape": [4, 5], "seed": 1234})

# ---------------------------------------------------------------- optimizers
# Loss: mean((X·w + b − Y)²) + 0.1·sum(w⁴), written with the binding's ops.


def quad_loss(w, b, X, Y):
    return torch.square(torch.matmul(X, w) + b - Y).mean() + torch.pow(w, 4.0).sum() * 0.1


def optim_case(name, kind, attrs, lrs=None, steps=3):
    X, Y = rn(6, 3), rn(6, 2)
    w0, b0 = rn(3, 2), rn(2)
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    if kind == "sgd":
        opt = torch.optim.SGD([w, b], lr=attrs["lr"], momentum=attrs["momentum"],
                              dampening=attrs["dampening"], weight_decay=attrs["weight_decay"],
                              nesterov=attrs["nesterov"])
    else:
        opt = torch.optim.Adam([w, b], lr=attrs["lr"], betas=(attrs["beta1"], attrs["beta2"]),
                               eps=attrs["eps"], weight_decay=attrs["weight_decay"],
                               amsgrad=attrs["amsgrad"])
    outs = {}
    for s in range(1, steps + 1):
        if lrs is not None:
            for g in opt.param_groups:
                g["lr"] = lrs[s - 1]
        opt.zero_grad()
        loss = quad_loss(w, b, X, Y)
        loss.backward()
        opt.step()
        outs["loss%d" % s] = loss.detach().clone()
        outs["w%d" % s] = w.detach().clone()
        outs["b%d" % s] = b.detach().clone()
    a = dict(attrs, steps=steps)
    if lrs is not None:
        a["lrs"] = lrs
    add(name, kind, {"w": w0, "b": b0, "X": X, "Y": Y}, lambda i: outs, attrs=a, tol=CONV_TOL)


optim_case("sgd_momentum_nesterov_wd", "sgd",
           {"lr": 0.05, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.01, "nesterov": True})
optim_case("sgd_momentum_dampening", "sgd",
           {"lr": 0.05, "momentum": 0.8, "dampening": 0.1, "weight_decay": 0.0, "nesterov": False})
optim_case("adam_wd", "adam",
           {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01,
            "amsgrad": False})
optim_case("adam_amsgrad_lr_schedule", "adam",
           {"lr": 0.1, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.0,
            "amsgrad": True}, lrs=[0.1, 0.05, 0.02])


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")
    doc = {"generator": "gen_vectors.py", "torch": torch.__version__, "cases": CASES}
    text = json.dumps(doc, separators=(",", ":"))
    with open(out, "w") as f:
        f.write(text)
        f.write("\n")
    ops = {}
    for c in CASES:
        ops[c["op"]] = ops.get(c["op"], 0) + 1
    print("%d cases, %d ops, %d bytes -> %s" % (len(CASES), len(ops), len(text), out),
          file=sys.stderr)
    if len(text) >= 1 << 20:
        sys.exit("vectors.json is over 1 MB")


if __name__ == "__main__":
    main()
