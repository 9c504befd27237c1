#!/usr/bin/python3
"""twins.py: what twins of the source buy a natural fingerprint (extract --twins).

Input: a folder (scripts/twins-curve.sh fills it) of `conferral verify --json`
answers to a natural extraction at τ = 0 (every input the source
misclassifies): fleet.json (the 16+16 training fleet: surr-/ref- in the
file names), twins.json (16 twins), calibration.json (99 calibration
models) and zoo-<seed>.json with zoo-<seed>.tsv (truth, arch, recipe,
spec). Selects keys as extract does — Confer = Surr·(1 − Ref), or with
twins Surr·(1 − max(Ref, Twin)) (eq. 10, fingerprint.ConferGroups) —
judges each zoo against the calibration models' empirical 1 % line
(above all 99) and writes a markdown report on stdout.
Usage: twins.py DIR ZOO...
"""
import json, os, sys

import numpy as np

TAU = 0.6


def answers(path):
    """Each model's matches with the keys, in key order, by suspect spec."""
    out = {}
    for v in json.load(open(path))["verdicts"]:
        m = np.zeros(len(v["matches"]), bool)
        m[np.asarray(v["order"])] = v["matches"]
        out[v["suspect"]] = m
    return out


def auc(pos, neg):
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def main():
    d, zoos = sys.argv[1], sys.argv[2:]
    fleet = answers(f"{d}/fleet.json")
    S = np.array([m for k, m in fleet.items() if "/surr" in k])
    R = np.array([m for k, m in fleet.items() if "/ref" in k])
    tw = answers(f"{d}/twins.json")  # in the twins' order (twin-lenet-0, 1, ...), whatever verify's
    T = np.array([tw[k] for k in sorted(tw, key=lambda k: int(k.rsplit("-", 1)[1].split(".")[0]))])
    null = np.array(list(answers(f"{d}/calibration.json").values()))
    Z = {}
    for z in zoos:
        a = answers(f"{d}/zoo-{z}.json")
        rows = [l.rstrip("\n").split("\t") for l in open(f"{d}/zoo-{z}.tsv")]
        Z[z] = (np.array([a[r[3]] for r in rows]), np.array([r[0] == "derived" for r in rows]), rows)
    s_k, r_k = S.mean(0), R.mean(0)

    def judge(keys):
        line = null[:, keys].mean(1).max()
        out = []
        for z in zoos:
            M, der, _ = Z[z]
            acc = M[:, keys].mean(1)
            out.append(((acc[der] <= line).sum(), (acc[~der] > line).sum(), auc(acc[der], acc[~der]), der.sum(), (~der).sum()))
        return line, out

    rng = np.random.default_rng(1)
    print("# Twins of the source: what they buy a natural fingerprint (development zoos)\n")
    print(f"Fashion-MNIST, LeNet-5 source (4 epochs, defender's half). Keys: the source's misclassified test inputs "
          f"({S.shape[1]}), kept at conferrability ≥ {TAU} on the 16+16 training fleet (`extract --natural`); with twins "
          f"(LeNet-5s trained exactly as the source was, `train --like`, seeds 900–915) a key must also be rare among "
          f"them: Surr·(1 − max(Ref, Twin)). Judged: the {len(zoos)} development zoos ({', '.join(zoos)}; 62 suspects each, "
          f"32 derived and 30 independent), against the empirical 1 % line of the {len(null)} calibration models (a suspect "
          f"is accused above all of them). These zoos made every earlier choice, this one included: the held-out judgement "
          f"is docs/results/benchmark-natural-twins.\n")
    print("## Twins, 0 to 16 (Surr·(1 − max(Ref, Twin)) ≥ 0.6; 10 random draws of the twins below 16, means)\n")
    print("| twins | keys | 1 % line | " + " | ".join(f"zoo {z}: false neg. / false pos. / AUC" for z in zoos) + " |")
    print("|---:|---:|---:|" + "---|" * len(zoos))
    for nt in (0, 1, 2, 4, 8, 12, 16):
        res = []
        for _ in range(10 if 0 < nt < len(T) else 1):
            tw = T[rng.choice(len(T), nt, replace=False)].mean(0) if nt else np.zeros_like(r_k)
            keys = np.where(s_k * (1 - np.maximum(r_k, tw)) >= TAU - 1e-9)[0]
            line, out = judge(keys)
            res.append((len(keys), line, out))
        n = np.mean([r[0] for r in res])
        line = np.mean([r[1] for r in res])
        cells = []
        for zi, z in enumerate(zoos):
            fn = np.mean([r[2][zi][0] for r in res])
            fp = np.mean([r[2][zi][1] for r in res])
            a = np.mean([r[2][zi][2] for r in res])
            nd, ni = res[0][2][zi][3], res[0][2][zi][4]
            cells.append(f"{fn:.1f}/{nd} / {fp:.1f}/{ni} / {a:.3f}")
        print(f"| {nt} | {n:.0f} | {line:.3f} | " + " | ".join(cells) + " |")
    print("\n## How the twins count (all 16)\n")
    print("| rule | τ | keys | 1 % line | " + " | ".join(f"zoo {z}" for z in zoos) + " |")
    print("|---|---:|---:|---:|" + "---|" * len(zoos))
    t_k = T.mean(0)
    RT = np.concatenate([R, T]).mean(0)
    for tau in (0.5, 0.6, 0.7):
        for name, conf in [("references only (no twins)", s_k * (1 - r_k)),
                           ("twins among the references (one mean)", s_k * (1 - RT)),
                           ("twins apart: Surr·(1 − max(Ref, Twin))", s_k * (1 - np.maximum(r_k, t_k)))]:
            keys = np.where(conf >= tau - 1e-9)[0]
            line, out = judge(keys)
            cells = [f"{o[0]}/{o[3]} missed, {o[1]}/{o[4]} accused, AUC {o[2]:.3f}" for o in out]
            print(f"| {name} | {tau} | {len(keys)} | {line:.3f} | " + " | ".join(cells) + " |")
    keys = np.where(s_k * (1 - np.maximum(r_k, t_k)) >= TAU - 1e-9)[0]
    line, _ = judge(keys)
    print(f"\n## Who is missed with all 16 twins (τ = {TAU}, {len(keys)} keys, 1 % line {line:.3f})\n")
    print("| zoo | derived model | recipe | agreement |")
    print("|---|---|---|---:|")
    for z in zoos:
        M, der, rows = Z[z]
        acc = M[:, keys].mean(1)
        for i in np.argsort(acc):
            if der[i] and acc[i] <= line:
                print(f"| {z} | {os.path.basename(rows[i][3])} | {rows[i][2]} | {acc[i]:.3f} |")
    top = np.sort(null[:, keys].mean(1))[-5:][::-1]
    print(f"\nThe calibration models nearest the line agree on {', '.join(f'{x:.3f}' for x in top)} of the keys.")


if __name__ == "__main__":
    main()
