package fingerprint_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/conferral/conferral/backend/fingerprint"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func floatsNear(got, want []float64, tol float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !near(got[i], want[i], tol) {
			return false
		}
	}
	return true
}

// TestTransferConfer checks eq. 9 and 10 on hand-made label matrices:
// labels[m][i] is model m's label of example i, t the targets.
func TestTransferConfer(t *testing.T) {
	cases := []struct {
		name     string
		surr     [][]int64
		ref      [][]int64
		t        []int64
		transfer []float64 // Transfer(surr)
		refTr    []float64 // Transfer(ref)
		confer   []float64
	}{
		{
			name:     "one model each",
			surr:     [][]int64{{1, 2, 3}},
			ref:      [][]int64{{1, 0, 3}},
			t:        []int64{1, 2, 0},
			transfer: []float64{1, 1, 0},
			refTr:    []float64{1, 0, 0},
			confer:   []float64{0, 1, 0},
		},
		{
			name: "fractions",
			surr: [][]int64{
				{5, 5, 5, 0},
				{5, 1, 5, 0},
				{5, 1, 2, 1},
				{5, 1, 2, 1},
			},
			ref: [][]int64{
				{5, 1, 0, 0},
				{0, 1, 0, 0},
				{0, 3, 0, 1},
			},
			t:        []int64{5, 1, 2, 9},
			transfer: []float64{1, 0.75, 0.5, 0},
			refTr:    []float64{1.0 / 3, 2.0 / 3, 0, 0},
			confer:   []float64{2.0 / 3, 0.25, 0.5, 0},
		},
		{
			name:     "perfectly conferrable and perfectly transferable",
			surr:     [][]int64{{7, 7}, {7, 7}},
			ref:      [][]int64{{3, 7}, {4, 7}},
			t:        []int64{7, 7},
			transfer: []float64{1, 1},
			refTr:    []float64{0, 1},
			confer:   []float64{1, 0},
		},
		{
			name:     "no models",
			surr:     nil,
			ref:      nil,
			t:        []int64{1, 2},
			transfer: []float64{0, 0},
			refTr:    []float64{0, 0},
			confer:   []float64{0, 0},
		},
		{
			name:     "no examples",
			surr:     [][]int64{{}},
			ref:      [][]int64{{}},
			t:        []int64{},
			transfer: []float64{},
			refTr:    []float64{},
			confer:   []float64{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := fingerprint.Transfer(tc.surr, tc.t); !floatsNear(got, tc.transfer, 1e-12) {
				t.Errorf("Transfer(S) = %v, want %v", got, tc.transfer)
			}
			if got := fingerprint.Transfer(tc.ref, tc.t); !floatsNear(got, tc.refTr, 1e-12) {
				t.Errorf("Transfer(R) = %v, want %v", got, tc.refTr)
			}
			if got := fingerprint.Confer(tc.surr, tc.ref, tc.t); !floatsNear(got, tc.confer, 1e-12) {
				t.Errorf("Confer = %v, want %v", got, tc.confer)
			}
		})
	}
}

// TestConferGroups checks eq. 10 with grouped references: the most
// agreeing group counts, an empty group counts for nothing, and one group
// is Confer.
func TestConferGroups(t *testing.T) {
	surr := [][]int64{{1, 2, 3, 4}, {1, 2, 3, 0}}
	keys := []int64{1, 2, 3, 4}
	refs := [][]int64{{0, 2, 0, 0}, {0, 0, 0, 0}, {0, 0, 3, 0}, {0, 0, 0, 0}} // Transfer 0, .25, .25, 0
	twins := [][]int64{{1, 0, 0, 0}, {1, 0, 3, 0}}                            // Transfer 1, 0, .5, 0
	cases := []struct {
		name   string
		groups [][][]int64
		want   []float64
	}{
		{"references alone", [][][]int64{refs}, []float64{1, 0.75, 0.75, 0.5}},
		{"references and twins: the larger Transfer", [][][]int64{refs, twins}, []float64{0, 0.75, 0.5, 0.5}},
		{"an empty group counts for nothing", [][][]int64{refs, nil}, []float64{1, 0.75, 0.75, 0.5}},
		{"no references", nil, []float64{1, 1, 1, 0.5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := fingerprint.ConferGroups(surr, tc.groups, keys); !floatsNear(got, tc.want, 1e-12) {
				t.Errorf("ConferGroups = %v, want %v", got, tc.want)
			}
		})
	}
	if a, b := fingerprint.Confer(surr, refs, keys), fingerprint.ConferGroups(surr, [][][]int64{refs}, keys); !floatsNear(a, b, 0) {
		t.Errorf("Confer %v differs from ConferGroups with one group %v", a, b)
	}
}

func TestAgreement(t *testing.T) {
	for _, tc := range []struct {
		labels, keys []int64
		want         float64
	}{
		{[]int64{1, 2, 3, 4}, []int64{1, 2, 3, 4}, 1},
		{[]int64{1, 2, 3, 4}, []int64{1, 0, 3, 0}, 0.5},
		{[]int64{0, 0, 0}, []int64{1, 1, 1}, 0},
		{[]int64{}, []int64{}, 0},
	} {
		if got := fingerprint.Agreement(tc.labels, tc.keys); got != tc.want {
			t.Errorf("Agreement(%v, %v) = %v, want %v", tc.labels, tc.keys, got, tc.want)
		}
	}
}

func TestAUC(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pos, neg []float64
		want     float64
	}{
		{"perfect separation", []float64{0.9, 0.8, 1}, []float64{0.1, 0.3}, 1},
		{"reversed", []float64{0.1, 0.2}, []float64{0.5, 0.9, 0.6}, 0},
		{"all tied", []float64{0.5, 0.5}, []float64{0.5, 0.5, 0.5}, 0.5},
		{"mixed with a tie", []float64{0.9, 0.5}, []float64{0.5, 0.1}, 0.875},
		{"one each", []float64{0.3}, []float64{0.7}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fingerprint.AUC(tc.pos, tc.neg); got != tc.want {
				t.Errorf("AUC = %v, want %v", got, tc.want)
			}
		})
	}
	if v := fingerprint.AUC(nil, []float64{1}); !math.IsNaN(v) {
		t.Errorf("AUC without positives = %v, want NaN", v)
	}
	if v := fingerprint.AUC([]float64{1}, nil); !math.IsNaN(v) {
		t.Errorf("AUC without negatives = %v, want NaN", v)
	}
}

// trapezoid is the area under a curve of points sorted by x.
func trapezoid(x, y []float64) float64 {
	var a float64
	for i := 1; i < len(x); i++ {
		a += (x[i] - x[i-1]) * (y[i] + y[i-1]) / 2
	}
	return a
}

func TestROC(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	scores := func(n int, shift float64) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Round((r.Float64()+shift)*10) / 10 // coarse, so ties occur
		}
		return out
	}
	cases := []struct {
		name     string
		pos, neg []float64
	}{
		{"perfect", []float64{0.9, 0.8}, []float64{0.1, 0.2, 0.3}},
		{"reversed", []float64{0.1}, []float64{0.9, 0.8}},
		{"tied", []float64{0.5, 0.5}, []float64{0.5}},
		{"random with ties", scores(20, 0.3), scores(15, 0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fpr, tpr := fingerprint.ROC(tc.pos, tc.neg)
			if len(fpr) != len(tpr) || len(fpr) < 2 {
				t.Fatalf("%d and %d points", len(fpr), len(tpr))
			}
			if fpr[0] != 0 || tpr[0] != 0 || fpr[len(fpr)-1] != 1 || tpr[len(tpr)-1] != 1 {
				t.Errorf("ROC runs from (%v,%v) to (%v,%v), want (0,0) to (1,1)", fpr[0], tpr[0], fpr[len(fpr)-1], tpr[len(tpr)-1])
			}
			if !slices.IsSorted(fpr) || !slices.IsSorted(tpr) {
				t.Errorf("ROC is not monotonic: fpr %v tpr %v", fpr, tpr)
			}
			// The ROC curve's area is the AUC (ties as diagonal segments).
			if a, auc := trapezoid(fpr, tpr), fingerprint.AUC(tc.pos, tc.neg); !near(a, auc, 1e-12) {
				t.Errorf("area under ROC %v, AUC %v", a, auc)
			}
		})
	}
	// Perfect separation passes through (0,1).
	fpr, tpr := fingerprint.ROC([]float64{0.9, 0.8}, []float64{0.1, 0.2})
	found := false
	for i := range fpr {
		found = found || (fpr[i] == 0 && tpr[i] == 1)
	}
	if !found {
		t.Errorf("perfectly separated ROC misses (0,1): fpr %v tpr %v", fpr, tpr)
	}
}
