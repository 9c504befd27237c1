#!/usr/bin/python3
"""controls.py: issue 18's per-suspect baseline, measured.

A fingerprint's keys are the C-BIM examples every training surrogate
carries and at most half the training references follow. Its *controls*
are examples of the same crafting (same start-point pool, same ε, same
C-BIM run) that every training surrogate carries and at least half the
training references follow too: how readily a model follows any
perturbation of this kind. The per-suspect baseline compares a suspect's
agreement on the keys (F) with its agreement on the controls (C).

Input: a folder of `conferral verify --json` answers of one unfiltered
C-BIM run (extract --tau 0 --tau-surr 0), one file per model, named
s<i>.json (suspects, truth in s<i>.meta: truth<TAB>arch<TAB>recipe<TAB>spec),
c<i>.json (calibration models) and f<i>.json (training models, whose file
name says surr- or ref-). Writes a markdown table on stdout.
"""
import glob, json, os, sys

import numpy as np


def matches(path):
    v = json.load(open(path))
    v = v["verdicts"][0] if "verdicts" in v else v
    m = np.zeros(len(v["matches"]), bool)
    for pos, k in enumerate(v["order"]):
        m[k] = v["matches"][pos]
    return m


def load(d, prefix):
    out = []
    for f in sorted(glob.glob(f"{d}/{prefix}*.json"), key=lambda p: int(os.path.basename(p)[1:-5])):
        out.append((open(f[:-5] + ".meta").read().strip().split("\t"), matches(f)))
    return out


def auc(pos, neg):
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(np.mean(pos > neg) + 0.5 * np.mean(pos == neg))


def main(d):
    suspects, cal, fleet = load(d, "s"), load(d, "c"), load(d, "f")
    surr = np.mean([m for meta, m in fleet if "/surr-" in meta[0]], 0)
    ref = np.mean([m for meta, m in fleet if "/ref-" in meta[0]], 0)
    keys = (surr >= 1) & (surr * (1 - ref) >= 0.5)
    controls = (surr >= 1) & (ref >= 0.5)
    derived = [m for meta, m in suspects if meta[0] == "derived"]
    indep = [m for meta, m in suspects if meta[0] == "independent"]
    cals = [m for meta, m in cal]
    stats = {
        "F: agreement on the keys": lambda m: m[keys].mean(),
        "C: agreement on the controls": lambda m: m[controls].mean(),
        "F − C": lambda m: m[keys].mean() - m[controls].mean(),
        "F / (C + 0.05)": lambda m: m[keys].mean() / (m[controls].mean() + 0.05),
    }
    print(f"{len(derived)} derived and {len(indep)} independent suspects, {len(cals)} calibration models; "
          f"{int(keys.sum())} keys and {int(controls.sum())} controls out of {len(keys)} crafted examples.\n")
    print("| statistic | AUC (derived vs independent) | derived above every calibration model | independent at or above it |")
    print("|---|---:|---:|---:|")
    for name, f in stats.items():
        d_, i_, c_ = [f(m) for m in derived], [f(m) for m in indep], [f(m) for m in cals]
        top = max(c_)
        print(f"| {name} | {auc(d_, i_):.3f} | {np.mean(np.array(d_) > top):.2f} | {np.mean(np.array(i_) >= top):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
