#!/usr/bin/python3
"""sprt.py: the sequential test against the calibration models themselves,
simulated on one fingerprint's answers (issue 13, item 3).

H0: the suspect is like one of the N calibration models, picked at random,
its rate Beta(k_j + 1/2, n - k_j + 1/2) (Pólya urns, averaged); H1: its rate
is uniform on [line, 1], line the empirical test's 1 % line. Wald's bounds
at α = 0.01, β = 0.05; an accusation also needs the empirical p-value on
the keys asked at or below α, and clearing the 95 % Clopper–Pearson interval
on them below both that test's line and θ = 0.7 (as `verify --sequential`
does). Each suspect
is asked its keys in a seeded random order.

Usage: sprt.py CALIBRATION.json RESULTS.json INDEX
(RESULTS.json from `experiment benchmark --json`, INDEX the fingerprint's
place in it). Prints one line.
"""
import json
import sys

import numpy as np
from scipy.special import betainc, betaln, logsumexp
from scipy.stats import beta as beta_dist

ALPHA, BETA = 0.01, 0.05


def main(calf, results, idx):
    cal = json.load(open(calf))
    res = json.load(open(results))[int(idx)]
    n = cal["fingerprints"]
    K = np.array([[c == "1" for c in m["matches"]] for m in cal["models"]])
    kj = K.sum(1)
    allowed = int(np.floor(ALPHA * (len(kj) + 1) + 1e-9)) - 1
    assert allowed >= 0, "too few calibration models for the empirical test"
    line = (np.sort(kj)[::-1][allowed] + 1) / n
    a, b = kj + 0.5, n - kj + 0.5
    rng = np.random.default_rng(1)

    def run(matches, order):
        s = f = 0
        for t, i in enumerate(order):
            s, f = (s + 1, f) if matches[i] else (s, f + 1)
            l0 = logsumexp(betaln(a + s, b + f) - betaln(a, b)) - np.log(len(kj))
            l1 = betaln(s + 1, f + 1) + np.log(max(1e-300, 1 - betainc(s + 1, f + 1, line))) - np.log(1 - line)
            if l1 - l0 >= np.log((1 - BETA) / ALPHA):
                if (1 + (K[:, order[: t + 1]].sum(1) >= s).sum()) / (len(kj) + 1) <= ALPHA:
                    return "derived", t + 1
            elif l1 - l0 <= np.log(BETA / (1 - ALPHA)):
                asked = K[:, order[: t + 1]].sum(1)
                sub_line = (np.sort(asked)[::-1][allowed] + 1) / (t + 1)
                hi = 1.0 if f == 0 else beta_dist.ppf(0.975, s + 1, f)
                if hi < min(sub_line, 0.7):
                    return "independent", t + 1
        return "none", len(order)

    out = {True: [], False: []}
    for r in res["Rows"]:
        v = r["Full"]
        m = np.zeros(n, bool)
        for pos, k in enumerate(v["order"]):
            m[k] = v["matches"][pos]
        out[r["derived"]].append(run(m, rng.permutation(n)))
    d, i = out[True], out[False]
    count = lambda xs, what: sum(x == what for x, _ in xs)
    print(f"line {line:.3f}; derived: {count(d, 'derived')}/{len(d)} accused, {count(d, 'independent')} cleared, {count(d, 'none')} undecided; "
          f"independent: {count(i, 'derived')}/{len(i)} accused, {count(i, 'independent')} cleared; median queries {np.median([q for _, q in d + i]):.0f} of {n}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
