// Package stats holds the statistics a verdict rests on: binomial and
// beta-binomial tails, a maximum-likelihood beta-binomial fit of agreement
// across independent models, Clopper–Pearson intervals and Wald's
// sequential probability ratio test. It is plain Go over float64, with no
// tensors, so the browser app and the backend can share it.
package stats

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// LogChoose is log C(n, k).
func LogChoose(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return a - b - c
}

// LogBeta is log B(a, b).
func LogBeta(a, b float64) float64 {
	x, _ := math.Lgamma(a)
	y, _ := math.Lgamma(b)
	z, _ := math.Lgamma(a + b)
	return x + y - z
}

// logSumExp is log Σ exp(t) without overflow.
func logSumExp(ts []float64) float64 {
	if len(ts) == 0 {
		return math.Inf(-1)
	}
	m := slices.Max(ts)
	if math.IsInf(m, -1) {
		return m
	}
	var s float64
	for _, t := range ts {
		s += math.Exp(t - m)
	}
	return m + math.Log(s)
}

// BinomialTail is P[X ≥ k] for X ~ Binomial(n, p).
func BinomialTail(k, n int, p float64) float64 {
	return math.Min(1, math.Exp(logBinomialTail(k, n, p)))
}

// BinomialLower is P[X ≤ k] for X ~ Binomial(n, p): the tail of n − X,
// without the cancellation of 1 − P[X ≥ k+1].
func BinomialLower(k, n int, p float64) float64 {
	return BinomialTail(n-k, n, 1-p)
}

// logBinomialTail is log P[X ≥ k] for X ~ Binomial(n, p), without
// underflow.
func logBinomialTail(k, n int, p float64) float64 {
	switch {
	case k <= 0:
		return 0
	case k > n, p <= 0:
		return math.Inf(-1)
	case p >= 1:
		return 0
	}
	lp, lq := math.Log(p), math.Log1p(-p)
	terms := make([]float64, 0, n-k+1)
	for i := k; i <= n; i++ {
		terms = append(terms, LogChoose(n, i)+float64(i)*lp+float64(n-i)*lq)
	}
	return math.Min(0, logSumExp(terms))
}

// ClopperPearson is the exact two-sided interval for a binomial proportion
// at the given confidence (0.95 for 95 %) after k successes in n trials:
// lo solves P[X ≥ k | lo] = (1−conf)/2 and hi solves P[X ≤ k | hi] = (1−conf)/2.
func ClopperPearson(k, n int, conf float64) (lo, hi float64) {
	if n <= 0 {
		return 0, 1
	}
	a := (1 - conf) / 2
	lo, hi = 0, 1
	if k > 0 {
		lo = bisect(func(p float64) bool { return BinomialTail(k, n, p) < a })
	}
	if k < n {
		hi = bisect(func(p float64) bool { return 1-BinomialTail(k+1, n, p) > a })
	}
	return lo, hi
}

// bisect finds the p in [0,1] where below(p) turns from true to false.
func bisect(below func(p float64) bool) float64 {
	l, h := 0.0, 1.0
	for range 200 {
		m := (l + h) / 2
		if m == l || m == h {
			break
		}
		if below(m) {
			l = m
		} else {
			h = m
		}
	}
	return (l + h) / 2
}

// BetaBinomial is the distribution of agreements X out of n when each
// independent model agrees with every key at its own rate p ~ Beta(Alpha,
// Beta): models differ (over-dispersion), which a single binomial rate
// cannot express.
type BetaBinomial struct {
	Alpha float64 `json:"alpha"`
	Beta  float64 `json:"beta"`
}

// Mean is the expected agreement rate α/(α+β).
func (d BetaBinomial) Mean() float64 { return d.Alpha / (d.Alpha + d.Beta) }

// SD is the standard deviation of the agreement rate p across models.
func (d BetaBinomial) SD() float64 {
	s := d.Alpha + d.Beta
	return math.Sqrt(d.Alpha * d.Beta / (s * s * (s + 1)))
}

// LogPMF is log P[X = k] for X out of n.
func (d BetaBinomial) LogPMF(k, n int) float64 {
	if k < 0 || k > n {
		return math.Inf(-1)
	}
	return LogChoose(n, k) + LogBeta(float64(k)+d.Alpha, float64(n-k)+d.Beta) - LogBeta(d.Alpha, d.Beta)
}

// Tail is P[X ≥ k] for X out of n: the p-value of k agreements.
func (d BetaBinomial) Tail(k, n int) float64 {
	if k <= 0 {
		return 1
	}
	if k > n {
		return 0
	}
	terms := make([]float64, 0, n-k+1)
	for i := k; i <= n; i++ {
		terms = append(terms, d.LogPMF(i, n))
	}
	return math.Min(1, math.Exp(logSumExp(terms)))
}

// Critical is the smallest k with Tail(k, n) ≤ alpha: the fewest
// agreements that reject independence at level alpha. It is n+1 when even
// n agreements do not.
func (d BetaBinomial) Critical(n int, alpha float64) int {
	k := n + 1
	for k > 0 && d.Tail(k-1, n) <= alpha {
		k--
	}
	return k
}

// LogLik is the log-likelihood of agreement counts out of n.
func (d BetaBinomial) LogLik(counts []int, n int) float64 {
	return d.logLik(histogram(counts, n), n)
}

// logLik is LogLik over a histogram: h[k] models agreed on k keys.
func (d BetaBinomial) logLik(h []int, n int) float64 {
	var s float64
	for k, c := range h {
		if c > 0 {
			s += float64(c) * d.LogPMF(k, n)
		}
	}
	return s
}

// histogram counts how many of counts equal each k in 0..n (others are
// dropped: callers check the range).
func histogram(counts []int, n int) []int {
	h := make([]int, n+1)
	for _, k := range counts {
		if k >= 0 && k <= n {
			h[k]++
		}
	}
	return h
}

// Bounds of the fit: the precision α+β stays in [minPrecision,
// maxPrecision] (the upper end is a binomial for every practical purpose)
// and the mean inside (0, 1).
const (
	minPrecision = 1e-3
	maxPrecision = 1e7
	meanEdge     = 1e-9
)

// ErrFewCounts says a fit was asked of fewer than two models.
var ErrFewCounts = errors.New("stats: a beta-binomial fit needs the agreement of at least two models")

// FitBetaBinomial is the maximum-likelihood beta-binomial over agreement
// counts out of n (one count per independent model). It searches the mean
// μ = α/(α+β) and the precision s = α+β with Nelder–Mead over (logit μ,
// log s), started from the method of moments; under-dispersed counts end
// at the binomial edge s = 10⁷.
func FitBetaBinomial(counts []int, n int) (BetaBinomial, error) {
	if len(counts) < 2 {
		return BetaBinomial{}, ErrFewCounts
	}
	if n <= 0 {
		return BetaBinomial{}, fmt.Errorf("stats: beta-binomial fit over %d trials", n)
	}
	var mean, sq float64
	for _, k := range counts {
		if k < 0 || k > n {
			return BetaBinomial{}, fmt.Errorf("stats: agreement count %d outside 0..%d", k, n)
		}
		mean += float64(k)
	}
	mean /= float64(len(counts))
	for _, k := range counts {
		sq += (float64(k) - mean) * (float64(k) - mean)
	}
	variance := sq / float64(len(counts)-1)
	mu := math.Min(math.Max(mean/float64(n), 1e-3), 1-1e-3)
	s := 1e4
	if n > 1 {
		if rho := (variance/(float64(n)*mu*(1-mu)) - 1) / float64(n-1); rho > 1e-6 {
			s = math.Min(math.Max(1/rho-1, 0.1), maxPrecision)
		}
	}
	h := histogram(counts, n)
	return maximise(mu, s, func(d BetaBinomial) float64 { return d.logLik(h, n) }), nil
}

// FitBetaBinomialTrials is FitBetaBinomial where each model had its own
// number of trials: counts[i] successes out of trials[i].
func FitBetaBinomialTrials(counts, trials []int) (BetaBinomial, error) {
	if len(counts) != len(trials) {
		return BetaBinomial{}, fmt.Errorf("stats: %d counts for %d trial numbers", len(counts), len(trials))
	}
	if len(counts) < 2 {
		return BetaBinomial{}, ErrFewCounts
	}
	var k, n, mean, sq float64
	for i, c := range counts {
		if trials[i] <= 0 {
			return BetaBinomial{}, fmt.Errorf("stats: beta-binomial fit over %d trials", trials[i])
		}
		if c < 0 || c > trials[i] {
			return BetaBinomial{}, fmt.Errorf("stats: count %d outside 0..%d", c, trials[i])
		}
		k += float64(c)
		n += float64(trials[i])
		mean += float64(c) / float64(trials[i])
	}
	// The method of moments on the rates, with the models' mean trials:
	// their variance is μ(1−μ)(1 + ρ(n−1))/n with ρ = 1/(s+1).
	mean /= float64(len(counts))
	for i, c := range counts {
		r := float64(c)/float64(trials[i]) - mean
		sq += r * r
	}
	variance := sq / float64(len(counts)-1)
	nBar := n / float64(len(counts))
	mu := math.Min(math.Max(k/n, 1e-3), 1-1e-3)
	s := 1e4
	if nBar > 1 {
		if rho := (variance*nBar/(mu*(1-mu)) - 1) / (nBar - 1); rho > 1e-6 {
			s = math.Min(math.Max(1/rho-1, 0.1), maxPrecision)
		}
	}
	return maximise(mu, s, func(d BetaBinomial) float64 {
		var ll float64
		for i, c := range counts {
			ll += d.LogPMF(c, trials[i])
		}
		return ll
	}), nil
}

// maximise is the beta-binomial of largest logLik, searched with
// Nelder–Mead over (logit μ, log s) from mean mu and precision s.
func maximise(mu, s float64, logLik func(BetaBinomial) float64) BetaBinomial {
	decode := func(x [2]float64) BetaBinomial {
		m := 1 / (1 + math.Exp(-x[0]))
		m = math.Min(math.Max(m, meanEdge), 1-meanEdge)
		p := math.Min(math.Max(math.Exp(x[1]), minPrecision), maxPrecision)
		return BetaBinomial{Alpha: m * p, Beta: (1 - m) * p}
	}
	nll := func(x [2]float64) float64 {
		if math.Abs(x[0]) > 40 || x[1] < math.Log(minPrecision)-1 || x[1] > math.Log(maxPrecision)+1 {
			return math.Inf(1)
		}
		return -logLik(decode(x))
	}
	x := [2]float64{math.Log(mu / (1 - mu)), math.Log(s)}
	// Restart from the optimum until it stops moving: Nelder–Mead can
	// stall on a simplex that collapsed early.
	for range 4 {
		y := nelderMead(nll, x, 0.5, 1e-12, 4000)
		moved := math.Abs(y[0]-x[0]) + math.Abs(y[1]-x[1])
		x = y
		if moved < 1e-9 {
			break
		}
	}
	return decode(x)
}

// nelderMead minimises f over two variables from x0 with an initial
// simplex of the given step, until the spread of f over the simplex falls
// below tol or after maxIter iterations.
func nelderMead(f func([2]float64) float64, x0 [2]float64, step, tol float64, maxIter int) [2]float64 {
	type vertex struct {
		x [2]float64
		f float64
	}
	v := [3]vertex{{x: x0}, {x: [2]float64{x0[0] + step, x0[1]}}, {x: [2]float64{x0[0], x0[1] + step}}}
	for i := range v {
		v[i].f = f(v[i].x)
	}
	at := func(a, b [2]float64, t float64) [2]float64 { // a + t(b − a)
		return [2]float64{a[0] + t*(b[0]-a[0]), a[1] + t*(b[1]-a[1])}
	}
	for range maxIter {
		slices.SortFunc(v[:], func(a, b vertex) int {
			switch {
			case a.f < b.f:
				return -1
			case a.f > b.f:
				return 1
			}
			return 0
		})
		if math.Abs(v[2].f-v[0].f) <= tol*(1+math.Abs(v[0].f)) {
			break
		}
		c := at(v[0].x, v[1].x, 0.5) // centroid of the best two
		r := at(c, v[2].x, -1)
		fr := f(r)
		switch {
		case fr < v[0].f:
			if e := at(c, v[2].x, -2); f(e) < fr {
				v[2] = vertex{e, f(e)}
			} else {
				v[2] = vertex{r, fr}
			}
		case fr < v[1].f:
			v[2] = vertex{r, fr}
		default:
			k := at(c, v[2].x, 0.5)
			if fr < v[2].f {
				k = at(c, r, 0.5)
			}
			if fk := f(k); fk < math.Min(fr, v[2].f) {
				v[2] = vertex{k, fk}
				continue
			}
			for i := 1; i < 3; i++ { // shrink towards the best
				v[i].x = at(v[0].x, v[i].x, 0.5)
				v[i].f = f(v[i].x)
			}
		}
	}
	best := v[0]
	for _, w := range v[1:] {
		if w.f < best.f {
			best = w
		}
	}
	return best.x
}
