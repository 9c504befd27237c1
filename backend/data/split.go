package data

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sort"
)

// Split divides d into disjoint defender and adversary halves (paper §6.1:
// the defender trains the source model and the fingerprinting models on
// one, the adversary's surrogates and the reference models are judged on
// the other). Every class is split in half, the halves are shuffled with
// seed, and the same seed always gives the same split. With odd class sizes
// the totals differ by at most one (see [SplitIndices]). Both halves are
// copies.
func Split(d *Dataset, seed int64) (defender, adversary *Dataset) {
	def, adv := SplitIndices(d, 0.5, seed)
	return splitParts(d, def, adv)
}

// SplitFraction is [Split] with a defender share other than one half: the
// paper gives the defender 85,000 and the adversary 95,000 of CINIC-10's
// 180,000 training images (§6.1). frac must lie in [0,1].
func SplitFraction(d *Dataset, frac float64, seed int64) (defender, adversary *Dataset, err error) {
	if !(frac >= 0 && frac <= 1) {
		return nil, nil, fmt.Errorf("data: split of %q: defender fraction %v is not in [0,1]", d.Name, frac)
	}
	def, adv := SplitIndices(d, frac, seed)
	defender, adversary = splitParts(d, def, adv)
	return defender, adversary, nil
}

// splitParts copies the two index sets out of d and names their parts.
func splitParts(d *Dataset, def, adv []int) (defender, adversary *Dataset) {
	defender, adversary = d.Subset(def), d.Subset(adv)
	defender.Part = joinPart(d.Part, "defender")
	adversary.Part = joinPart(d.Part, "adversary")
	return defender, adversary
}

func joinPart(part, sub string) string {
	if part == "" {
		return sub
	}
	return part + "/" + sub
}

// SplitIndices returns the image indices of a class-stratified split of d:
// round(frac·N) images for the defender, taken from each class in proportion
// (largest remainders get the spare images, the smaller class label first on
// ties), the rest for the adversary; both lists in an order shuffled with
// seed. frac is clamped to [0,1]. The result depends only on d.Labels, frac
// and seed, on every platform and Go version.
func SplitIndices(d *Dataset, frac float64, seed int64) (defender, adversary []int) {
	if math.IsNaN(frac) {
		frac = 0.5
	}
	frac = min(max(frac, 0), 1)
	byClass := map[int64][]int{}
	for i, y := range d.Labels {
		byClass[y] = append(byClass[y], i)
	}
	labels := make([]int64, 0, len(byClass))
	for y := range byClass {
		labels = append(labels, y)
	}
	slices.Sort(labels)

	// Per-class defender counts: floors, then the largest remainders.
	take := make([]int, len(labels))
	rem := make([]float64, len(labels))
	given := 0
	for k, y := range labels {
		exact := frac * float64(len(byClass[y]))
		take[k] = int(math.Floor(exact))
		rem[k] = exact - float64(take[k])
		given += take[k]
	}
	target := int(math.Round(frac * float64(len(d.Labels))))
	order := make([]int, len(labels))
	for k := range order {
		order[k] = k
	}
	// Largest remainders first; ties in class order (stable sort).
	sort.SliceStable(order, func(a, b int) bool { return rem[order[a]] > rem[order[b]] })
	for _, k := range order {
		if given >= target {
			break
		}
		if take[k] < len(byClass[labels[k]]) {
			take[k]++
			given++
		}
	}

	r := newRNG(seed, 0x5eed)
	for k, y := range labels {
		idx := slices.Clone(byClass[y])
		r.shuffle(idx)
		defender = append(defender, idx[:take[k]]...)
		adversary = append(adversary, idx[take[k]:]...)
	}
	r.shuffle(defender)
	r.shuffle(adversary)
	return defender, adversary
}

// rng is a deterministic random source whose output is fixed by its seed:
// PCG (a specified algorithm) with unbiased bounded integers by Lemire's
// method, written out here so that no library change can alter a split or
// a batch order.
type rng struct{ p *rand.PCG }

// newRNG returns a generator for seed on the given stream.
func newRNG(seed int64, stream uint64) rng {
	return rng{rand.NewPCG(uint64(seed), stream)}
}

// intn returns a uniform integer in [0,n), n > 0.
func (r rng) intn(n int) int {
	un := uint64(n)
	hi, lo := bits.Mul64(r.p.Uint64(), un)
	if lo < un {
		thresh := -un % un
		for lo < thresh {
			hi, lo = bits.Mul64(r.p.Uint64(), un)
		}
	}
	return int(hi)
}

// float64 returns a uniform number in [0,1) with 53 random bits.
func (r rng) float64() float64 { return float64(r.p.Uint64()>>11) / (1 << 53) }

// shuffle permutes s uniformly (Fisher–Yates).
func (r rng) shuffle(s []int) {
	for i := len(s) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		s[i], s[j] = s[j], s[i]
	}
}
