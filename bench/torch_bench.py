#!/usr/bin/python3
"""The PyTorch side of `conferral bench`: the same models and steps as the Go
binding, on the same libtorch (Debian's python3-torch), timed the same way.
Prints one JSON object: {"<model>/<op>": [seconds per iteration, ...]}."""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Normalize(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.register_buffer("mean", torch.full((1, c, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, c, 1, 1), 0.25))

    def forward(self, x):
        return (x - self.mean) / self.std


def conv_bn_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SmallCNN(nn.Module):
    """backend/nn SmallCNN: three conv-BN-ReLU-maxpool stages and a 2-layer head."""

    def __init__(self, c, hw, classes=10):
        super().__init__()
        self.norm = Normalize(c)
        layers, cin = [], c
        for w in (32, 64, 128):
            layers += [conv_bn_relu(cin, w), nn.MaxPool2d(2, ceil_mode=True)]
            cin = w
        self.features = nn.Sequential(*layers)
        side = hw
        for _ in range(3):
            side = (side + 1) // 2
        self.fc1 = nn.Linear(128 * side * side, 256)
        self.drop = nn.Dropout(0.25)
        self.fc2 = nn.Linear(256, classes)

    def forward(self, x):
        x = self.features(self.norm(x)).flatten(1)
        return self.fc2(self.drop(F.relu(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, cin, w, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, w, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.short = None
        if stride != 1 or cin != w:
            self.short = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.short is None else self.short(x)))


class ResNet(nn.Module):
    """backend/nn ResNet(n): CIFAR ResNet-(6n+2) with projection shortcuts."""

    def __init__(self, c, n, classes=10):
        super().__init__()
        self.norm = Normalize(c)
        self.stem = conv_bn_relu(c, 16)
        blocks, cin = [], 16
        for stage, w in enumerate((16, 32, 64)):
            for b in range(n):
                blocks.append(Block(cin, w, 2 if stage > 0 and b == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(self.stem(self.norm(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class LeNet(nn.Module):
    """backend/nn LeNet: LeNet-5 with ReLU and max pooling (the demo's source)."""

    def __init__(self, c, hw, classes=10):
        super().__init__()
        self.norm = Normalize(c)
        self.conv1 = nn.Conv2d(c, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        side = ((hw // 2) - 4) // 2
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * side * side, 120), nn.Linear(120, 84), nn.Linear(84, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(self.norm(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class MLP(nn.Module):
    """backend/nn MLP (widths 512, 256, dropout 0.2) and MLPDrop (1024, 1024, dropout 0.5)."""

    def __init__(self, c, hw, widths, p, classes=10):
        super().__init__()
        self.norm = Normalize(c)
        self.fc1, self.fc2 = nn.Linear(c * hw * hw, widths[0]), nn.Linear(widths[0], widths[1])
        self.fc3 = nn.Linear(widths[1], classes)
        self.p, self.both = p, widths[0] == widths[1]

    def forward(self, x):
        x = F.dropout(F.relu(self.fc1(self.norm(x).flatten(1))), self.p, self.training)
        x = F.relu(self.fc2(x))
        if self.both:
            x = F.dropout(x, self.p, self.training)
        return self.fc3(x)


def build(name, c, hw):
    return {"cnn": lambda: SmallCNN(c, hw), "resnet20": lambda: ResNet(c, 3), "lenet": lambda: LeNet(c, hw),
            "mlp": lambda: MLP(c, hw, (512, 256), 0.2), "mlpdrop": lambda: MLP(c, hw, (1024, 1024), 0.5)}[name]()


def timeit(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def cbim(args):
    """The C-BIM loop of backend/attack (eq. 11-14, dropout over members) on
    an ensemble of 1 source + 3 surrogates + 3 references (small CNNs), on
    1x28x28 inputs; seconds per step."""
    members = [SmallCNN(1, 28).eval() for _ in range(4)]
    refs = [SmallCNN(1, 28).eval() for _ in range(3)]
    n, eps, alpha, p = args.batch, 0.05, 0.01, 0.5
    x0 = torch.rand(n, 1, 28, 28)
    y = torch.randint(0, 10, (n,))
    not_y = F.one_hot(y, 10).float() * -1e9

    def mean_vote(v):
        keep = (torch.rand(v.shape[0], v.shape[1], 1) >= p).float()
        return (v * keep).sum(0) / keep.sum(0).clamp_min(1)

    def run():
        x = x0
        for _ in range(args.cbim_steps):
            xi = x.detach().requires_grad_(True)
            sv = torch.stack([F.softmax(m(xi), 1) for m in members])
            rv = torch.stack([F.softmax(m(xi), 1) for m in refs])
            me = (1 - mean_vote(rv)) * mean_vote(sv)
            t = (me.detach() + not_y).argmax(1, keepdim=True)
            loss = -me.gather(1, t).sum()
            (g,) = torch.autograd.grad(loss, xi)
            x = torch.clamp(xi.detach() - alpha * g.sign(), min=x0 - eps, max=x0 + eps).clamp(0, 1)

    return [t / args.cbim_steps for t in timeit(run, 1, max(1, args.iters // 3))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--models", default="cnn,resnet20")
    ap.add_argument("--shape", default="3,32,32")
    ap.add_argument("--cbim-steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c, h, w = (int(v) for v in args.shape.split(","))
    res = {}
    for name in args.models.split(","):
        m = build(name, c, h)
        x = torch.rand(args.batch, c, h, w)
        y = torch.randint(0, 10, (args.batch,))
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)

        def train_step():
            m.train()
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def forward():
            m.eval()
            with torch.no_grad():
                m(x)

        def input_grad():
            m.eval()
            xi = x.clone().requires_grad_(True)
            loss = F.cross_entropy(m(xi), y)
            torch.autograd.grad(loss, xi)

        for op, fn in (("train_step", train_step), ("forward", forward), ("input_grad", input_grad)):
            res[f"{name}/{op}"] = timeit(fn, args.warmup, args.iters)
    if args.cbim_steps > 0:
        res["cbim/7-model ensemble"] = cbim(args)
    print(json.dumps({"torch_version": torch.__version__, "threads": torch.get_num_threads(), "results": res}))


if __name__ == "__main__":
    main()
