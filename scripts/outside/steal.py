#!/usr/bin/python3
"""Train suspects outside Conferral, as an adversary with PyTorch would.

    steal.py --out DIR --endpoint http://127.0.0.1:8500/v2/models/model \\
             --derived 3 --independent 2
    steal.py --out DIR --source source.safetensors --conferral bin/conferral \\
             --model derived:tnet:adam,lr=0.001,epochs=3,aug=none

Every model is trained on the adversary's half of Fashion-MNIST's training
set, read from Debian's IDX files (/usr/share/datasets/fashion-mnist), and
judged on the 10,000 test images:

  derived      labelled by the source through a KServe v2 endpoint, as an
               API client would: --endpoint, or --source MODEL, which starts
               `conferral serve-model` on a free port for the duration;
               soft labels (the recipe's labels=soft) need an endpoint that
               answers probabilities (serve-model's default)
  independent  trained on the ground-truth labels

Each model is exported with torch.onnx.export (opset 13, input "input" of
shape (N,1,28,28) in pixel units [0,1], NCHW, normalisation inside, output
"logits") to DIR/ROLE-I-ARCH.onnx, and DIR/manifest.json lists them:

  {"source": ..., "split_seed": 1, "adversary_examples": 30000,
   "test_examples": 10000, "source_test_accuracy": 0.9, "queries": 40000,
   "models": [{"file": "derived-0-tnet.onnx", "role": "derived",
               "arch": "tnet", "recipe": "adam,lr=0.001,...", "seed": 1,
               "examples": 30000, "queries": 30000, "test_accuracy": 0.88,
               "agreement": 0.91, "seconds": 60.2}, ...]}

agreement is the share of the test set on which the model and the source
give the same label (null without a source). The source is asked once for
the whole adversary half and the test set (the manifest's queries, only
when a model is derived); a derived model's queries are the labelled
examples it trains on (its recipe's share). Verify them with
`conferral verify --fingerprint FP --suspect DIR/derived-0-tnet.onnx`.

The split is Conferral's own: data.SplitIndices (class-stratified halves,
shuffled by math/rand/v2's PCG-DXSM from --split-seed, default 1, the
CLI's default) reproduced bit for bit below, so the adversary's half here
is the one `conferral train --split adversary` uses; conferral_split.py
prints its indices, and a Go test (split_test.go) holds them to Conferral's.

Recipes use Conferral's compact syntax (backend/train/recipe.go):
OPTIMIZER[,key=value...] with optimizers sgd, sgd+nesterov, adam, adamw and
keys lr, mom, sched (cosine, step, constant), bs, epochs, wd, aug (none,
crop, crop+flip, noise), ls (label smoothing), labels (hard, soft), share
and dropout. Without --model, models cycle through this script's own
architectures and recipes (ARCHS, RECIPES), which are deliberately not
Conferral's: PyTorch's MNIST-example net, a LeNet-5 with tanh and average
pooling, a batch-norm net with global average pooling, and a tanh MLP;
Adam or AdamW without augmentation, a few epochs, as tutorials train.

Needs only Debian's python3-torch (and numpy); onnxruntime is not used.
"""

import argparse
import gzip
import json
import math
import os
import re
import struct
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conferral_split import DATA_DIR, load, split_indices  # noqa: E402

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel statistics

# ---------------------------------------------------------------------------
# The adversary's own architectures (pixels in [0,1] in, logits out).


class Normalize(nn.Module):
    def forward(self, x):
        return (x - MEAN) / STD


class TNet(nn.Module):
    """PyTorch's MNIST example: two 3×3 convolutions, max-pool, two dense layers."""

    has_dropout = True

    def __init__(self, dropout=0.0):
        super().__init__()
        p1, p2 = (dropout or 0.25), (dropout or 0.5)
        self.body = nn.Sequential(
            Normalize(), nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(p1), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(p2), nn.Linear(128, 10))

    def forward(self, x):
        return self.body(x)


class TLeNet(nn.Module):
    """LeNet-5 as LeCun drew it: tanh, average pooling, 6-16-120-84."""

    has_dropout = False

    def __init__(self, dropout=0.0):
        super().__init__()
        self.body = nn.Sequential(
            Normalize(), nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))

    def forward(self, x):
        return self.body(x)


class TBNNet(nn.Module):
    """Three conv–BN–ReLU stages (24, 48, 96), strided, global average pooling."""

    has_dropout = True

    def __init__(self, dropout=0.0):
        super().__init__()
        layers, c = [Normalize()], 1
        for w, s in ((24, 1), (48, 2), (96, 2)):
            layers += [nn.Conv2d(c, w, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout or 0.1), nn.Linear(c, 10)]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


class TMLP(nn.Module):
    """A tanh perceptron, 784-300-100-10 (LeCun et al. 1998's)."""

    has_dropout = True

    def __init__(self, dropout=0.0):
        super().__init__()
        self.body = nn.Sequential(
            Normalize(), nn.Flatten(), nn.Linear(784, 300), nn.Tanh(), nn.Dropout(dropout),
            nn.Linear(300, 100), nn.Tanh(), nn.Linear(100, 10))

    def forward(self, x):
        return self.body(x)


ARCHS = {"tnet": TNet, "tlenet": TLeNet, "tbnnet": TBNNet, "tmlp": TMLP}

# What a tutorial trains with: no augmentation, a few epochs.
RECIPES = [
    "adam,lr=0.001,sched=constant,bs=64,epochs=3,aug=none",
    "adamw,lr=0.002,sched=cosine,bs=128,epochs=3,aug=none,ls=0.1",
    "sgd,lr=0.01,mom=0.9,sched=step,bs=64,epochs=3,aug=none,wd=0",
    "adam,lr=0.001,sched=constant,bs=32,epochs=2,aug=crop,labels=soft",
]

# ---------------------------------------------------------------------------
# Recipes: Conferral's compact syntax (backend/train/recipe.go).

RECIPE_KEYS = ("opt", "lr", "mom", "sched", "bs", "epochs", "wd", "aug", "ls", "labels", "share", "dropout")


def recipe_for(opt):
    r = {"opt": opt, "lr": 0.05, "mom": 0.9, "sched": "cosine", "bs": 128, "epochs": 10, "wd": 5e-4,
         "aug": "crop+flip", "ls": 0.0, "labels": "hard", "share": 1.0, "dropout": 0.0}
    if opt == "adam":
        r.update(lr=0.001, mom=0.0, wd=0.0)
    elif opt == "adamw":
        r.update(lr=0.001, mom=0.0, wd=0.01)
    return r


def parse_recipe(s):
    fields = [f.strip() for f in s.split(",") if f.strip()]
    vals = {}
    for i, f in enumerate(fields):
        k, eq, v = f.partition("=")
        if not eq:
            if i:
                raise ValueError("recipe %r: %r is not key=value" % (s, f))
            k, v = "opt", f
        if k not in RECIPE_KEYS or k in vals:
            raise ValueError("recipe %r: unknown or repeated key %r" % (s, k))
        vals[k] = v
    r = recipe_for(vals.get("opt", "sgd+nesterov"))
    for k, v in vals.items():
        r[k] = type(r[k])(v) if k not in ("bs", "epochs") else int(v)
    ok = (r["opt"] in ("sgd", "sgd+nesterov", "adam", "adamw") and r["lr"] > 0 and 0 <= r["mom"] < 1
          and r["sched"] in ("cosine", "step", "constant") and r["bs"] > 0 and r["epochs"] > 0 and r["wd"] >= 0
          and r["aug"] in ("none", "crop", "crop+flip", "noise") and 0 <= r["ls"] < 1
          and r["labels"] in ("hard", "soft") and 0 < r["share"] <= 1 and 0 <= r["dropout"] < 1)
    if not ok:
        raise ValueError("recipe %r: a value is out of range" % s)
    return r


def recipe_string(r):
    out = [r["opt"], "lr=%g" % r["lr"]]
    if r["opt"].startswith("sgd"):
        out.append("mom=%g" % r["mom"])
    out += ["sched=" + r["sched"], "bs=%d" % r["bs"], "epochs=%d" % r["epochs"], "wd=%g" % r["wd"], "aug=" + r["aug"]]
    if r["ls"]:
        out.append("ls=%g" % r["ls"])
    out += ["labels=" + r["labels"], "share=%g" % r["share"]]
    if r["dropout"]:
        out.append("dropout=%g" % r["dropout"])
    return ",".join(out)


def augment(x, aug, gen):
    """Crops of the 2-pixel zero-padded image, flips, or noise of σ 0.1, as Conferral's."""
    if aug in ("crop", "crop+flip"):
        n = x.shape[0]
        padded = F.pad(x, (2, 2, 2, 2))
        dy = torch.randint(0, 5, (n,), generator=gen)
        dx = torch.randint(0, 5, (n,), generator=gen)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(n)])
        if aug == "crop+flip":
            flip = torch.rand(n, generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
    elif aug == "noise":
        x = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    return x


def train(model, x, targets, r, seed, log):
    """Fits model on x (N,1,28,28 in [0,1]) and targets (N labels or N×10 probabilities)."""
    gen = torch.Generator().manual_seed(seed)
    params = model.parameters()
    if r["opt"] in ("sgd", "sgd+nesterov"):
        opt = torch.optim.SGD(params, lr=r["lr"], momentum=r["mom"], weight_decay=r["wd"],
                              nesterov=r["opt"] == "sgd+nesterov" and r["mom"] > 0)
    elif r["opt"] == "adam":
        opt = torch.optim.Adam(params, lr=r["lr"], weight_decay=r["wd"])
    else:
        opt = torch.optim.AdamW(params, lr=r["lr"], weight_decay=r["wd"])
    steps = max(len(x) // r["bs"], 1) * r["epochs"]
    if r["sched"] == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    elif r["sched"] == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [steps // 2, steps * 3 // 4], 0.1)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    for epoch in range(r["epochs"]):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total, n = 0.0, 0
        for b in range(0, len(x) - r["bs"] + 1 if len(x) >= r["bs"] else 1, r["bs"]):
            idx = order[b:b + r["bs"]]
            xb = augment(x[idx], r["aug"], gen)
            loss = F.cross_entropy(model(xb), targets[idx], label_smoothing=r["ls"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        log("    epoch %d: loss %.4f" % (epoch + 1, total / max(n, 1)))


def predict(model, x):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])


# ---------------------------------------------------------------------------
# The source, as an API client sees it: a KServe v2 endpoint.


def query(endpoint, x, batch=500, log=print):
    """Sends x (N,1,28,28 float32 in [0,1]) to the endpoint's /infer; returns
    (labels int64 N, probabilities N×K or None when it answers indices)."""
    labels, probs = [], []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        body = {"inputs": [{"name": "input", "shape": list(xb.shape), "datatype": "FP32",
                            "data": xb.reshape(-1).tolist()}]}
        req = urllib.request.Request(endpoint.rstrip("/") + "/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            out = json.load(resp)["outputs"][0]
        data = np.asarray(out["data"])
        if out["datatype"].startswith("FP") and len(out["shape"]) == 2:
            p = data.reshape(out["shape"]).astype(np.float32)
            probs.append(p)
            labels.append(p.argmax(1))
        else:
            labels.append(data.reshape(-1).astype(np.int64))
        if (i // batch) % 20 == 0:
            log("  queried %d of %d" % (min(i + batch, len(x)), len(x)))
    return np.concatenate(labels), (np.concatenate(probs) if probs else None)


def serve(conferral, model):
    """Starts `conferral serve-model` on a free port; returns (process, endpoint)."""
    p = subprocess.Popen([conferral, "serve-model", "--model", model, "--addr", "127.0.0.1:0", "--quiet"],
                         stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        m = re.search(r"KServe v2:\s*(\S+)", line)
        if m:
            return p, m.group(1)
    p.kill()
    raise RuntimeError("conferral serve-model printed no KServe v2 URL")


# ---------------------------------------------------------------------------


def export(model, path, meta):
    import onnx  # python3-onnx: only to add metadata

    model.eval()
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=13)
    m = onnx.load(path)
    for k, v in {"conferral.layout": "nchw", "conferral.scale": "1", **meta}.items():
        e = m.metadata_props.add()
        e.key, e.value = k, str(v)
    onnx.checker.check_model(m)
    onnx.save(m, path)


def plan(args):
    if args.model:
        out = []
        for spec in args.model:
            role, arch, recipe = (spec.split(":", 2) + ["", ""])[:3]
            if role not in ("derived", "independent") or arch not in ARCHS:
                sys.exit("--model %r: want derived|independent:ARCH:RECIPE, ARCH one of %s" % (spec, ", ".join(ARCHS)))
            out.append((role, arch, recipe or RECIPES[0]))
        return out
    archs = list(ARCHS)
    out = [("derived", archs[i % len(archs)], RECIPES[i % len(RECIPES)]) for i in range(args.derived)]
    out += [("independent", archs[(i + 1) % len(archs)], RECIPES[(i + 2) % len(RECIPES)]) for i in range(args.independent)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index("\n\n"):])
    ap.add_argument("--out", help="folder for the ONNX files and manifest.json")
    ap.add_argument("--endpoint", help="the source's KServe v2 endpoint, http://HOST/v2/models/NAME")
    ap.add_argument("--source", help="the source model (safetensors or ONNX), served with --conferral")
    ap.add_argument("--conferral", default="bin/conferral", help="the conferral binary for --source (default bin/conferral)")
    ap.add_argument("--derived", type=int, default=2, help="derived models (default 2)")
    ap.add_argument("--independent", type=int, default=2, help="independent models (default 2)")
    ap.add_argument("--model", action="append", help="ROLE:ARCH:RECIPE, repeatable; replaces --derived/--independent")
    ap.add_argument("--epochs", type=int, help="override every recipe's epochs")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N adversary and test images (0: all)")
    ap.add_argument("--seed", type=int, default=1, help="first model's seed; model i gets seed+i")
    ap.add_argument("--split-seed", type=int, default=1, help="Conferral's --split-seed (default 1)")
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    log = lambda s: print(s, file=sys.stderr, flush=True)

    train_x, train_y = load(args.data_dir, "train")
    _, adv = split_indices(train_y, 0.5, args.split_seed)
    if not args.out:
        ap.error("--out is required")
    torch.set_num_threads(args.threads)
    jobs = plan(args)
    if args.limit:
        adv = adv[:args.limit]
    x = torch.from_numpy(train_x[adv].astype(np.float32) / 255).unsqueeze(1)
    y = torch.from_numpy(train_y[adv])
    test_x, test_y = load(args.data_dir, "t10k")
    if args.limit:
        test_x, test_y = test_x[:args.limit], test_y[:args.limit]
    tx = torch.from_numpy(test_x.astype(np.float32) / 255).unsqueeze(1)
    ty = torch.from_numpy(test_y)
    os.makedirs(args.out, exist_ok=True)

    manifest = {"source": args.endpoint or args.source, "split_seed": args.split_seed,
                "adversary_examples": len(adv), "test_examples": len(ty), "models": []}
    labels = probs = src_test = None
    if any(role == "derived" for role, _, _ in jobs):
        if not (args.endpoint or args.source):
            sys.exit("derived models need --endpoint or --source")
        proc, endpoint = (None, args.endpoint) if args.endpoint else serve(args.conferral, args.source)
        try:
            log("labelling %d adversary images through %s" % (len(x), endpoint))
            labels, probs = query(endpoint, x.numpy(), log=log)
            src_test, _ = query(endpoint, tx.numpy(), log=log)
        finally:
            if proc:
                proc.terminate()
                proc.wait()
        src_test = torch.from_numpy(src_test)
        manifest["source_test_accuracy"] = round(float((src_test == ty).float().mean()), 4)
        manifest["queries"] = len(x) + len(tx)
        log("source: test accuracy %.4f" % manifest["source_test_accuracy"])

    for i, (role, arch, recipe) in enumerate(jobs):
        r = parse_recipe(recipe)
        if args.epochs:
            r["epochs"] = args.epochs
        seed = args.seed + i
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed ^ 0x5A4E)
        idx = torch.randperm(len(x), generator=gen)[:max(1, round(r["share"] * len(x)))].sort().values
        if role == "derived":
            if r["labels"] == "soft":
                if probs is None:
                    sys.exit("%s: labels=soft, but the endpoint answers labels only" % recipe)
                targets = torch.from_numpy(probs)[idx]
            else:
                targets = torch.from_numpy(labels)[idx]
        else:
            r["labels"] = "hard"  # ground truth has no probabilities
            targets = y[idx]
        if not ARCHS[arch].has_dropout:
            r["dropout"] = 0.0
        model = ARCHS[arch](r["dropout"])
        log("%s %d: %s, %s, %d examples" % (role, i, arch, recipe_string(r), len(idx)))
        start = time.time()
        train(model, x[idx], targets, r, seed, log)
        secs = time.time() - start
        pred = predict(model, tx)
        entry = {"file": "%s-%d-%s.onnx" % (role, i, arch), "role": role, "arch": arch, "recipe": recipe_string(r),
                 "seed": seed, "examples": len(idx), "queries": len(idx) if role == "derived" else 0,
                 "test_accuracy": round(float((pred == ty).float().mean()), 4),
                 "agreement": None if src_test is None else round(float((pred == src_test).float().mean()), 4),
                 "seconds": round(secs, 1)}
        export(model, os.path.join(args.out, entry["file"]),
               {"outside.role": role, "outside.arch": arch, "outside.recipe": entry["recipe"], "outside.seed": seed,
                "outside.trainer": "torch " + torch.__version__})
        log("  test accuracy %.4f, agreement with the source %s, %.0f s" % (entry["test_accuracy"], entry["agreement"], secs))
        manifest["models"].append(entry)
        with open(os.path.join(args.out, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
