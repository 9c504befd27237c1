#!/usr/bin/python3
"""null.py: where a calibrated 1 % line can honestly sit (issues 13 and 18).

The calibrated rule accuses a suspect when its agreement with the keys is
in the top 1 % of independent models' agreement, as a beta-binomial fit
over calibration models says. Held out, it cleared most derived models:
its line sat far above every calibration model. This measures why, and
whether another model of the same null would do better, on the
development zoo (already judged, so nothing here is held out):

- the null with 12 and with 48 calibration models;
- three fits of it: one beta-binomial (the shipped rule); a mixture of two
  (EM, each population at least three models, kept where BIC prefers it);
  one beta-binomial fitted to the upper tail only (models below a quantile
  censored, so the models that never make the source's mistakes do not
  shape the tail);
- for each, the 1 % line and the development zoo's errors at it, beside
  the empirical test's line (above all but FPR·(N+1) − 1 of the models).

Usage: null.py RESULTS.json NAME:INDEX:CAL12.json:CAL48.json ...
(RESULTS.json is `experiment benchmark --json` over the fingerprints;
INDEX is the fingerprint's place in it.) Writes markdown on stdout.
"""
import json
import sys

import numpy as np
from scipy import optimize, stats

FPR = 0.01


def fit(k, n, w=None, censor=None, starts=([0, 0], [1, 1], [2, 0], [-1, 0], [3, 3])):
    """Maximum-likelihood Beta(a, b) of counts k out of n, weighted by w;
    counts at or below censor enter as P[X <= censor] only."""
    w = np.ones(len(k)) if w is None else w

    def nll(x):
        a, b = np.exp(x)
        if censor is None:
            return -np.sum(w * stats.betabinom.logpmf(k, n, a, b))
        hi = k > censor
        return -(np.sum(stats.betabinom.logpmf(k[hi], n, a, b)) + np.sum(~hi) * stats.betabinom.logcdf(censor, n, a, b))

    best = min((optimize.minimize(nll, s, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 8000}) for s in starts),
               key=lambda r: r.fun)
    return np.exp(np.clip(best.x, -7, 16))


def line(tail, n):
    """The fewest agreements whose tail is at or below FPR."""
    return next((t for t in range(n + 1) if tail(t) <= FPR), n + 1)


def mixture(k, n):
    """Two populations by EM from splits at the quartiles; None where a
    population holds fewer than three models or BIC prefers one."""
    best = None
    for q in (0.25, 0.5, 0.75):
        r = (k >= np.quantile(k, q)).astype(float)
        ok, A, B = True, [0, 0], [0, 0]
        for _ in range(100):
            if r.sum() < 3 or (1 - r).sum() < 3:
                ok = False
                break
            pi = r.mean()
            A, B = fit(k, n, 1 - r, starts=([0, 0], np.log(A) if A[0] else [1, 1])), fit(k, n, r, starts=([0, 0], np.log(B) if B[0] else [1, 1]))
            l0 = (1 - pi) * stats.betabinom.pmf(k, n, *A)
            l1 = pi * stats.betabinom.pmf(k, n, *B)
            new = l1 / np.maximum(l0 + l1, 1e-300)
            if np.max(np.abs(new - r)) < 1e-5:
                break
            r = new
        if not ok:
            continue
        ll = np.sum(np.log(np.maximum((1 - pi) * stats.betabinom.pmf(k, n, *A) + pi * stats.betabinom.pmf(k, n, *B), 1e-300)))
        if best is None or ll > best[0]:
            best = (ll, pi, A, B)
    if best is None:
        return None, False
    one = fit(k, n)
    ll1 = np.sum(stats.betabinom.logpmf(k, n, *one))
    N = len(k)
    chosen = -2 * best[0] + 5 * np.log(N) < -2 * ll1 + 2 * np.log(N)
    return best, chosen


def main(results, specs):
    res = json.load(open(results))
    print("| fingerprint | calibration models | their agreement (min–median–max) | null | 1 % line | derived cleared (of 32) | independent accused (of 30) |")
    print("|---|---:|---|---|---:|---:|---:|")
    for spec in specs:
        name, idx, *cals = spec.split(":")
        rows = res[int(idx)]["Rows"]
        for calf in cals:
            cal = json.load(open(calf))
            n = cal["fingerprints"]
            k = np.array([m["agree"] for m in cal["models"]])
            assert all(r["Full"]["fingerprints"] == n for r in rows), f"{calf} is for another fingerprint"
            der = np.array([r["Full"]["agree"] for r in rows if r["derived"]])
            ind = np.array([r["Full"]["agree"] for r in rows if not r["derived"]])
            spread = f"{k.min() / n:.2f}–{np.median(k) / n:.2f}–{k.max() / n:.2f}"
            cands = []
            a, b = fit(k, n)
            cands.append((f"one beta-binomial Beta({a:.2g}, {b:.2g}) (the fitted test: shipped below 99 models)", line(lambda t: stats.betabinom.sf(t - 1, n, a, b), n)))
            m, chosen = mixture(k, n)
            if m is not None:
                _, pi, A, B = m
                t = line(lambda t: (1 - pi) * stats.betabinom.sf(t - 1, n, *A) + pi * stats.betabinom.sf(t - 1, n, *B), n)
                cands.append((f"two populations, {pi:.2f} at mean {B[0] / B.sum():.2f} (BIC {'prefers' if chosen else 'rejects'} it)", t))
            for q in (0.5, 0.75):
                c = int(np.quantile(k, q))
                a2, b2 = fit(k, n, censor=c)
                cands.append((f"upper tail only (below the {int(q * 100)}th percentile censored)", line(lambda t: stats.betabinom.sf(t - 1, n, a2, b2), n)))
            allowed = int(np.floor(FPR * (len(k) + 1) + 1e-9)) - 1
            top = np.sort(k)[::-1]
            if allowed >= 0:
                cands.append((f"**empirical test** (exact at {FPR:g})", int(top[allowed]) + 1))
            else:
                cands.append((f"empirical, above every model (p = 1/{len(k) + 1} = {1 / (len(k) + 1):.3f}: cannot reach {FPR:g})", int(top[0]) + 1))
            for what, t in cands:
                print(f"| {name} | {len(k)} | {spread} | {what} | {t / n:.3f} | {int(np.sum(der < t))} | {int(np.sum(ind >= t))} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
