package experiment

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/suspect"
)

// rateSuspect agrees with the fingerprint's key on image i when i is in
// its set; it tells images apart by their first pixel.
type rateSuspect struct {
	name  string
	fp    *fingerprint.Fingerprint
	agree func(i int) bool
}

func (s rateSuspect) String() string { return s.name }

func (s rateSuspect) Classify(_ context.Context, b suspect.Images) ([]int64, error) {
	per := b.C * b.H * b.W
	out := make([]int64, b.N)
	for j := range b.N {
		i := int(b.X[j*per]*255 + 0.5)
		out[j] = (s.fp.Keys[i] + 1) % 10
		if s.agree(i) {
			out[j] = s.fp.Keys[i]
		}
	}
	return out, nil
}

// TestBenchmark judges made-up suspects with known truth by a frozen,
// calibrated rule and checks the counts, the frozen hash and the report.
func TestBenchmark(t *testing.T) {
	const n = 120
	fp := &fingerprint.Fingerprint{N: n, C: 1, H: 1, W: 2, Images: make([]uint8, 2*n), Originals: make([]uint8, 2*n),
		Meta: fingerprint.Meta{Dataset: "test", Classes: []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}}}
	for i := range n {
		fp.Images[2*i] = uint8(i)
		fp.Keys, fp.Labels, fp.Confer = append(fp.Keys, int64(i%10)), append(fp.Labels, int64((i+1)%10)), append(fp.Confer, 1)
	}
	share := func(name string, p float64) rateSuspect { // agrees on a spread share p of the keys
		return rateSuspect{name: name, fp: fp, agree: func(i int) bool { return float64((i*37)%n) < p*n }}
	}
	var cal []fingerprint.IndependentModel
	for j := range 12 {
		cal = append(cal, fingerprint.IndependentModel{Suspect: share(fmt.Sprint("cal", j), 0.2+0.01*float64(j)), Arch: "a"})
	}
	c, err := fingerprint.Calibrate(context.Background(), fp, cal, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	b := &Benchmark{Fingerprint: fp, Rule: fingerprint.Rule{Calibration: c}, Dataset: "test", Scale: "toy", Command: "go test", Seed: 1}
	for j, p := range []float64{0.9, 0.8, 0.6, 0.3} { // the last derived model evades
		b.Suspects = append(b.Suspects, BenchSuspect{Suspect: share(fmt.Sprint("derived", j), p), Derived: true, Arch: "a", Recipe: "r", Via: "local"})
	}
	for j, p := range []float64{0.25, 0.2, 0.7} { // the last independent model is accused
		b.Suspects = append(b.Suspects, BenchSuspect{Suspect: share(fmt.Sprint("independent", j), p), Arch: "b", Recipe: "r", Via: "local"})
	}
	dir := report.Dir(t.TempDir())
	r, err := b.Run(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := b.Rule.Hash(fp)
	if r.RuleHash != hash || r.Derived != 4 || r.Independent != 3 || r.FN != 1 || r.FP != 1 || r.ThetaFP != 1 || r.ThetaFN != 2 {
		t.Errorf("result %+v, want hash %s, 1 of 4 missed, 1 of 3 accused", r, hash)
	}
	if r.FPR[0] != 1.0/3 || !(r.FPR[1] < 1.0/3 && r.FPR[2] > 1.0/3) || r.AUC >= 1 || !(r.AUCInterval[0] <= r.AUC && r.AUC <= r.AUCInterval[1]) {
		t.Errorf("rates %v, AUC %v %v", r.FPR, r.AUC, r.AUCInterval)
	}
	for _, row := range r.Rows {
		if row.Seq == nil || row.Seq.Sequential == nil {
			t.Errorf("%s: no sequential verdict", row.Suspect)
		}
	}
	frozen, err := os.ReadFile(dir.Path("RULE"))
	if err != nil || !strings.Contains(string(frozen), hash) {
		t.Errorf("RULE file %q (%v) lacks the hash", frozen, err)
	}
	// The sequential test every suspect also gets is frozen too.
	seq := b.Rule
	seq.Sequential = &fingerprint.Sequential{}
	seqHash, _ := seq.Hash(fp)
	if r.SeqRuleHash != seqHash || seqHash == hash || !strings.Contains(string(frozen), "sequential "+seqHash) {
		t.Errorf("RULE file %q: want the sequential rule's hash %s", frozen, seqHash)
	}
	md, err := os.ReadFile(dir.Path("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"go test", hash, "False-positive rate 0.333", "False-negative rate 0.250", "**wrong**", "histogram.png", "12 independent models", "point rule (fingerprint accuracy ≥ θ = 0.7) on the same suspects: 1 of 3 independent models accused, 2 of 4"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// A summary over two fingerprints (here the same one twice) shows
	// each suspect's spread and both rows.
	sum := report.Dir(t.TempDir())
	if err := WriteSummary(sum, "toy", "go test", []string{"a", "b"}, []*BenchResult{r, r}); err != nil {
		t.Fatal(err)
	}
	md, err = os.ReadFile(sum.Path("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[a](a/README.md)", "[b](b/README.md)", "derived3", "0.30–0.30", "2/6", "1/3 = 0.333"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
}
