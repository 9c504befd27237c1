// Package fingerprint extracts and verifies fingerprints made of
// conferrable adversarial examples (§5): Transfer and Confer scores (eq. 9
// and 10), Extract (Algorithm 2), Verify (Algorithm 1) with the evidence a
// reviewer needs, and the self-describing, committed fingerprint file.
package fingerprint

import (
	"math"
	"slices"
)

// Transfer is eq. 9 per example: the fraction of models whose label equals
// the target t. labels[m][i] is model m's label of example i.
func Transfer(labels [][]int64, t []int64) []float64 {
	out := make([]float64, len(t))
	if len(labels) == 0 {
		return out
	}
	for _, l := range labels {
		for i := range t {
			if l[i] == t[i] {
				out[i]++
			}
		}
	}
	for i := range out {
		out[i] /= float64(len(labels))
	}
	return out
}

// Confer is eq. 10 per example: Transfer(S)·(1 − Transfer(R)).
func Confer(surr, ref [][]int64, t []int64) []float64 { return ConferGroups(surr, [][][]int64{ref}, t) }

// ConferGroups is eq. 10 with the references in groups, the most agreeing
// group counting: Transfer(S)·(1 − max_g Transfer(R_g)). With the training
// references in one group and the source's twins (same architecture and
// recipe, other seeds) in another, a key must be rare among both: the
// twins are few among many references, and their mean would hide them.
func ConferGroups(surr [][]int64, refs [][][]int64, t []int64) []float64 {
	ts := Transfer(surr, t)
	tr := make([]float64, len(t))
	for _, g := range refs {
		if len(g) == 0 {
			continue
		}
		for i, v := range Transfer(g, t) {
			tr[i] = math.Max(tr[i], v)
		}
	}
	out := make([]float64, len(t))
	for i := range out {
		out[i] = ts[i] * (1 - tr[i])
	}
	return out
}

// Agreement is the fraction of labels equal to keys (fingerprint accuracy,
// Algorithm 1, line 2).
func Agreement(labels, keys []int64) float64 {
	if len(keys) == 0 {
		return 0
	}
	n := 0
	for i, k := range keys {
		if labels[i] == k {
			n++
		}
	}
	return float64(n) / float64(len(keys))
}

// AUC is the area under the ROC curve of scores that should rank positives
// above negatives (ties count half): the probability that a random
// surrogate scores above a random reference.
func AUC(pos, neg []float64) float64 {
	if len(pos) == 0 || len(neg) == 0 {
		return math.NaN()
	}
	var s float64
	for _, p := range pos {
		for _, n := range neg {
			switch {
			case p > n:
				s++
			case p == n:
				s += 0.5
			}
		}
	}
	return s / float64(len(pos)*len(neg))
}

// ROC returns the ROC curve's points (false-positive rate, true-positive
// rate) over all thresholds, from (0,0) to (1,1).
func ROC(pos, neg []float64) (fpr, tpr []float64) {
	ths := append(append([]float64{}, pos...), neg...)
	slices.Sort(ths)
	ths = slices.Compact(ths)
	slices.Reverse(ths)
	fpr, tpr = []float64{0}, []float64{0}
	for _, th := range ths {
		fpr = append(fpr, frac(neg, th))
		tpr = append(tpr, frac(pos, th))
	}
	return append(fpr, 1), append(tpr, 1)
}

func frac(xs []float64, th float64) float64 {
	n := 0
	for _, x := range xs {
		if x >= th {
			n++
		}
	}
	return float64(n) / float64(len(xs))
}
