#!/usr/bin/python3
"""Generate the ONNX test models of backend/onnx and their PyTorch references.

Run with Debian's Python (python3-torch 1.13, python3-onnx 1.12) from this
directory or anywhere:

    /usr/bin/python3 backend/onnx/testdata/gen_onnx.py

It defines small-width versions of the paper's architectures in PyTorch
(ResNet-20, VGG-16, MobileNetV2, DenseNet-BC) and a Keras-style model (NHWC
input in [0, 255], Rescaling, Transpose inside, HardSwish, HardSigmoid
squeeze-excite, ReLU6 as Clip, ReduceMean, MatMul + Add, Softmax), exports
each at opsets 9, 11, 13 and 17 with torch.onnx, and writes, for a fixed
batch of pixel-space images x (NCHW, [0, 1]):

    ref/<arch>_input.npy    x, float32 (N, C, H, W)
    ref/<arch>_output.npy   the model's output y = f(x), float32 (N, K)
    ref/<arch>_weights.npy  a fixed w, float32 (N, K)
    ref/<arch>_grad.npy     d sum(w * f(x)) / dx, float32 (N, C, H, W)

References are computed in float64 from the same (float32) weights that the
ONNX files hold. manifest.json lists every file with what a consumer must do
to feed pixel-space NCHW images to the graph:

    graph_input = to_layout((scale * x - mean) / std)

(layout nchw or nhwc; mean and std per channel, in units after scaling).
Some files also carry this convention in metadata_props under the keys
conferral.layout ("nchw" or "nhwc"), conferral.scale ("255"),
conferral.mean and conferral.std (comma-separated, "0.4914,0.4822,0.4465")
(see docs/onnx.md); the others are "foreign" files without them.

Weights are random (seeded) with batch-norm running statistics and affine
parameters set to non-trivial values; the models are exported in eval mode
with batch norm kept as BatchNormalization nodes (not folded into the
convolutions) and, in VGG, a Dropout node in its inference form.
"""

import json
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import helper, numpy_helper

OPSETS = (9, 11, 13, 17)
BATCH = 3
CLASSES = 10
HERE = os.path.dirname(os.path.abspath(__file__))


class Normalize(nn.Module):
    """Per-channel z-score of pixel-space input: exports as Sub and Div."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def conv_bn(cin, cout, k, stride=1, groups=1):
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, cout, 3, stride)
        self.conv2, self.bn2 = conv_bn(cout, cout, 3)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(*conv_bn(cin, cout, 1, stride))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.short is None else self.short(x)))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (3 stages of 3 basic blocks), widths 4/8/16."""

    def __init__(self, width=4):
        super().__init__()
        self.norm = Normalize([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
        self.stem = nn.Sequential(*conv_bn(3, width, 3), nn.ReLU())
        layers, cin = [], width
        for stage, w in enumerate((width, 2 * width, 4 * width)):
            for b in range(3):
                layers.append(BasicBlock(cin, w, 2 if stage > 0 and b == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # GlobalAveragePool
        self.fc = nn.Linear(cin, CLASSES)  # Gemm

    def forward(self, x):
        x = self.layers(self.stem(self.norm(x)))
        return self.fc(torch.flatten(self.pool(x), 1))  # Flatten


class VGG16(nn.Module):
    """CIFAR VGG-16 with batch norm at 1/32 width, a two-layer classifier
    with dropout, and a flatten by view(N, -1) (Shape/Gather/Reshape)."""

    CFG = (2, 2, 0, 4, 4, 0, 8, 8, 8, 0, 16, 16, 16, 0, 16, 16, 16, 0)

    def __init__(self):
        super().__init__()
        self.norm = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
        layers, cin = [], 3
        for w in self.CFG:
            if w == 0:
                layers.append(nn.MaxPool2d(2))
            else:
                layers += conv_bn(cin, w, 3) + [nn.ReLU()]
                cin = w
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(cin, 16)
        self.fc2 = nn.Linear(16, CLASSES)

    def forward(self, x):
        x = self.features(self.norm(x))
        x = x.view(x.size(0), -1)
        # A Dropout node is inserted before fc2 after export (see add_dropout).
        return self.fc2(F.relu(self.fc1(x)))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expansion, stride):
        super().__init__()
        hidden = cin * expansion
        layers = []
        if expansion != 1:
            layers += conv_bn(cin, hidden, 1) + [nn.ReLU6()]
        layers += conv_bn(hidden, hidden, 3, stride, groups=hidden) + [nn.ReLU6()]
        layers += conv_bn(hidden, cout, 1)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2, CIFAR strides, about 1/4 width: depthwise convolutions,
    ReLU6 (Clip), linear bottlenecks, residual adds."""

    CFG = ((1, 4, 1, 1), (6, 8, 2, 1), (6, 8, 2, 2), (6, 16, 2, 2), (6, 24, 1, 1))

    def __init__(self):
        super().__init__()
        self.norm = Normalize([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
        layers, cin = conv_bn(3, 8, 3) + [nn.ReLU6()], 8
        for exp, out, blocks, stride in self.CFG:
            for b in range(blocks):
                layers.append(InvertedResidual(cin, out, exp, stride if b == 0 else 1))
                cin = out
        layers += conv_bn(cin, 64, 1) + [nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(64, CLASSES)

    def forward(self, x):
        x = self.features(self.norm(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DenseNet(nn.Module):
    """DenseNet-BC, growth 4, three dense blocks of two bottleneck layers:
    pre-activation BN-ReLU-Conv, Concat, transitions with AveragePool.

    It has no normalisation layer: the consumer applies mean and std, which
    the file records in its metadata_props."""

    MEAN = [0.4914, 0.4822, 0.4465]
    STD = [0.2470, 0.2435, 0.2616]

    def __init__(self, k=4, n=2):
        super().__init__()
        self.stem = nn.Conv2d(3, 2 * k, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList()
        self.trans = nn.ModuleList()
        c = 2 * k
        for b in range(3):
            layers = nn.ModuleList()
            for _ in range(n):
                layers.append(nn.Sequential(
                    nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 4 * k, 1, bias=False),
                    nn.BatchNorm2d(4 * k), nn.ReLU(), nn.Conv2d(4 * k, k, 3, padding=1, bias=False)))
                c += k
            self.blocks.append(layers)
            if b < 2:
                self.trans.append(nn.Sequential(
                    nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)))
                c //= 2
        self.final = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())
        self.fc = nn.Linear(c, CLASSES)

    def forward(self, x):
        x = self.stem(x)
        for b, layers in enumerate(self.blocks):
            for layer in layers:
                x = torch.cat([x, layer(x)], 1)
            if b < len(self.trans):
                x = self.trans[b](x)
        x = self.final(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class KerasNHWC(nn.Module):
    """What a Keras (tf2onnx) MobileNetV3-style classifier looks like in ONNX:
    NHWC input of 28x28 grey images in [0, 255], a Rescaling layer (Mul), a
    Transpose to NCHW for the convolutions and back, HardSwish, a
    squeeze-excite block gated by HardSigmoid, ReLU6 as Clip, global pooling
    as ReduceMean over H and W, Dense as MatMul + Add, and a Softmax output."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(1, 8, 3, 2)
        self.dw, self.bn2 = conv_bn(8, 8, 3, 1, groups=8)
        self.se1 = nn.Conv2d(8, 4, 1)
        self.se2 = nn.Conv2d(4, 8, 1)
        self.pw, self.bn3 = conv_bn(8, 16, 1)
        self.kernel = nn.Parameter(torch.randn(16, CLASSES))
        self.bias = nn.Parameter(torch.randn(CLASSES) * 0.1)

    def forward(self, x):
        x = x * (1.0 / 255.0)
        x = x.permute(0, 3, 1, 2)
        x = F.hardswish(self.bn1(self.conv1(x)))
        x = F.relu6(self.bn2(self.dw(x)))
        s = x.mean((2, 3), keepdim=True)
        x = x * F.hardsigmoid(self.se2(F.relu(self.se1(s))))
        x = F.hardswish(self.bn3(self.pw(x)))
        x = x.permute(0, 2, 3, 1)
        x = x.mean((1, 2))
        return F.softmax(torch.matmul(x, self.kernel) + self.bias, dim=-1)


def randomize(model, a, gen):
    """He-initialise convolutions and linear layers, give batch norm random
    affine parameters, and calibrate its running statistics on a batch of
    images (as training would), so that signals neither vanish nor explode
    and outputs depend on the input."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
        elif isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.2)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(to_graph_input(images(a, 64, gen, torch.float32), a))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()


def images(a, n, gen, dtype):
    """Images that differ in brightness, colour and coarse structure, so the
    outputs differ across the batch: per-image channel means, smooth patterns
    (upsampled 4x4 noise), pixel noise, clipped to [0, 1]."""
    c, h, w = a["chw"]
    base = torch.rand((n, c, 1, 1), generator=gen, dtype=dtype) * 0.6 + 0.2
    coarse = F.interpolate(torch.randn((n, c, 4, 4), generator=gen, dtype=dtype),
                           size=(h, w), mode="bilinear", align_corners=False)
    fine = torch.randn((n, c, h, w), generator=gen, dtype=dtype)
    return (base + 0.25 * coarse + 0.05 * fine).clamp(0, 1)


# Each entry: name, constructor, pixel-space input shape (C, H, W), how the
# consumer maps pixel-space NCHW images to the graph input, the output kind,
# and whether the file records that convention in metadata_props.
ARCHS = [
    dict(name="resnet20", make=ResNet20, chw=(3, 32, 32), layout="nchw", scale=1.0,
         mean=[0.0] * 3, std=[1.0] * 3, output="logits", metadata=True),
    dict(name="vgg16", make=VGG16, chw=(3, 32, 32), layout="nchw", scale=1.0,
         mean=[0.0] * 3, std=[1.0] * 3, output="logits", metadata=False),
    dict(name="mobilenetv2", make=MobileNetV2, chw=(3, 32, 32), layout="nchw", scale=1.0,
         mean=[0.0] * 3, std=[1.0] * 3, output="logits", metadata=False),
    dict(name="densenet", make=DenseNet, chw=(3, 32, 32), layout="nchw", scale=1.0,
         mean=DenseNet.MEAN, std=DenseNet.STD, output="logits", metadata=True),
    dict(name="keras_nhwc", make=KerasNHWC, chw=(1, 28, 28), layout="nhwc", scale=255.0,
         mean=[0.0], std=[1.0], output="probabilities", metadata=True),
]


def to_graph_input(x, a):
    """Pixel-space NCHW images → the graph's input, as the manifest says."""
    c = len(a["mean"])
    mean = torch.tensor(a["mean"], dtype=x.dtype).view(1, c, 1, 1)
    std = torch.tensor(a["std"], dtype=x.dtype).view(1, c, 1, 1)
    x = (a["scale"] * x - mean) / std
    return x.permute(0, 2, 3, 1) if a["layout"] == "nhwc" else x


def add_dropout(model_proto, opset):
    """Insert Dropout (inference form, ratio 0.5) before the last Gemm, as
    exporters of Keras and of older PyTorch leave it in eval graphs."""
    g = model_proto.graph
    gemms = [i for i, n in enumerate(g.node) if n.op_type == "Gemm"]
    idx = gemms[-1]
    gemm = g.node[idx]
    src = gemm.input[0]
    out = src + "_dropout"
    if opset >= 12:
        g.initializer.append(numpy_helper.from_array(np.array(0.5, dtype=np.float32), "dropout_ratio"))
        node = helper.make_node("Dropout", [src, "dropout_ratio"], [out], name="Dropout_0")
    else:
        node = helper.make_node("Dropout", [src], [out], name="Dropout_0", ratio=0.5)
    gemm.input[0] = out
    g.node.insert(idx, node)


def num(v):
    """A number as metadata writes it: 1 not 1.0, 0.4914 as is."""
    return "%g" % v


def export(model, a, opset, path):
    c, h, w = a["chw"]
    shape = (BATCH, h, w, c) if a["layout"] == "nhwc" else (BATCH, c, h, w)
    dummy = torch.rand(shape)
    # PRESERVE keeps BatchNormalization nodes (EVAL would fold them into the
    # convolutions); the model is in eval mode, so they export in inference form.
    torch.onnx.export(
        model, dummy, path, opset_version=opset, input_names=["input"],
        output_names=[a["output"]], dynamic_axes={"input": {0: "N"}, a["output"]: {0: "N"}},
        training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)
    m = onnx.load(path)
    if a["name"] == "vgg16":
        add_dropout(m, opset)
    m.producer_name = "conferral gen_onnx.py (torch %s)" % torch.__version__
    m.doc_string = "Conferral test model %s (random weights), opset %d" % (a["name"], opset)
    del m.metadata_props[:]
    if a["metadata"]:
        for k, v in (("conferral.layout", a["layout"]), ("conferral.scale", num(a["scale"])),
                     ("conferral.mean", ",".join(map(num, a["mean"]))),
                     ("conferral.std", ",".join(map(num, a["std"])))):
            m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    return sorted({n.op_type for n in m.graph.node})


def references(model, a, seed):
    """Input, output and input gradient of sum(w * f(x)) in float64."""
    gen = torch.Generator().manual_seed(seed)
    x = images(a, BATCH, gen, torch.float64)
    wts = torch.randn((BATCH, CLASSES), generator=gen, dtype=torch.float64)
    m64 = model.double()
    x.requires_grad_(True)
    y = m64(to_graph_input(x, a))
    (y * wts).sum().backward()
    model.float()
    return {"input": x.detach(), "output": y.detach(), "weights": wts, "grad": x.grad}


def main():
    torch.set_num_threads(1)
    os.makedirs(os.path.join(HERE, "ref"), exist_ok=True)
    manifest = {"generator": "gen_onnx.py", "torch": torch.__version__, "onnx": onnx.__version__,
                "convention": "graph_input = to_layout((scale * x - mean) / std), x pixel-space NCHW in [0, 1]",
                "gradient": "grad = d sum(weights * output) / dx", "models": []}
    for i, a in enumerate(ARCHS):
        torch.manual_seed(100 + i)
        gen = torch.Generator().manual_seed(200 + i)
        model = a["make"]()
        randomize(model, a, gen)
        refs = {}
        for k, v in references(model, a, 300 + i).items():
            rel = "ref/%s_%s.npy" % (a["name"], k)
            np.save(os.path.join(HERE, rel), v.numpy().astype(np.float32))
            refs[k] = rel
        c, h, w = a["chw"]
        for opset in OPSETS:
            fname = "%s_op%d.onnx" % (a["name"], opset)
            ops = export(model, a, opset, os.path.join(HERE, fname))
            manifest["models"].append({
                "file": fname, "arch": a["name"], "opset": opset,
                "input_shape": [None, h, w, c] if a["layout"] == "nhwc" else [None, c, h, w],
                "pixel_shape": [c, h, w], "layout": a["layout"], "scale": a["scale"],
                "mean": a["mean"], "std": a["std"], "output": a["output"], "classes": CLASSES,
                "metadata_props": a["metadata"], "ops": ops, "ref": refs})
            print("%-24s %7d bytes  %s" % (fname, os.path.getsize(os.path.join(HERE, fname)), " ".join(ops)))
    models = manifest.pop("models")
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        # One model a line: short diffs when the generator changes.
        head = json.dumps(manifest, indent=1)[:-2]
        f.write(head + ',\n "models": [\n  ' + ",\n  ".join(json.dumps(m) for m in models) + "\n ]\n}\n")


if __name__ == "__main__":
    sys.exit(main())
