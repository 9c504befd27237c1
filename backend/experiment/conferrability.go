package experiment

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

// ConferrabilityStudy configures the study of Table 1 and Figures 4–5.
type ConferrabilityStudy struct {
	Eps     []float64
	Focus   float64 // ε of the table and the per-example histogram (0.15)
	Points  int     // start points, correctly classified test images
	Batch   int
	CBIM    attack.CBIMConfig
	Command string
}

// AttackScore is one attack at one ε.
type AttackScore struct {
	Attack        string
	Eps           float64
	Success       float64   // fraction whose source label changed
	Transfer      float64   // mean eq. 9 over testing references, successful examples
	Confer        float64   // mean eq. 10 over testing models, successful examples
	PerExample    []float64 // conferrability of each successful example
	Examples, All int
}

// craftFunc crafts adversarial examples for x with labels y on the source.
// An attack that reports its failures as an error returns it; the others
// panic with a *torch.Error.
type craftFunc func(x, y *torch.Tensor, eps float64) (*torch.Tensor, error)

func (st *ConferrabilityStudy) attacks(f *Fleet) ([]string, map[string]craftFunc) {
	src := f.Source().Model
	tr := func(r Role) []attack.Model {
		var out []attack.Model
		for _, m := range f.Select(r, false) {
			out = append(out, m.Model)
		}
		return out
	}
	ens := attack.Ensemble{Source: src, Surrogates: tr(Surrogate), References: tr(Reference)}
	order := []string{"FGSM", "IGM", "PGD", "DeepFool", "CW-L2", "C-BIM", cbimBest}
	return order, map[string]craftFunc{
		"FGSM": func(x, y *torch.Tensor, eps float64) (*torch.Tensor, error) {
			return attack.FGSM(src, x, y, attack.Config{Eps: eps}), nil
		},
		"IGM": func(x, y *torch.Tensor, eps float64) (*torch.Tensor, error) { // Table 6: 100 steps of 0.01, L∞
			return attack.BIM(src, x, y, attack.Config{Eps: eps, Alpha: 0.01, Steps: 100}), nil
		},
		"PGD": func(x, y *torch.Tensor, eps float64) (*torch.Tensor, error) { // Table 6: 100 steps of 0.01, q = 2
			return attack.PGD(src, x, y, attack.Config{Eps: eps, Alpha: 0.01, Steps: 100, Norm: attack.L2}), nil
		},
		"DeepFool": func(x, y *torch.Tensor, eps float64) (*torch.Tensor, error) { // Table 6: 100 iterations, q = ∞
			return attack.DeepFool(src, x, attack.DeepFoolConfig{Steps: 100, Overshoot: 0.02, Eps: eps, Norm: attack.LInf}), nil
		},
		"CW-L2": func(x, y *torch.Tensor, eps float64) (*torch.Tensor, error) { // Table 6: 100 iterations, κ = 50, lr 0.01
			return attack.CWL2(src, x, y, attack.CWConfig{Steps: 100, Kappa: 50, LR: 0.01, InitialConst: 1, SearchSteps: 3, Eps: eps}), nil
		},
		"C-BIM": func(x, y *torch.Tensor, eps float64) (*torch.Tensor, error) {
			c := st.CBIM
			c.Eps = eps
			return attack.CBIM(ens, x, y, c)
		},
		cbimBest: func(x, y *torch.Tensor, eps float64) (*torch.Tensor, error) {
			c := st.CBIM
			c.Eps, c.Best = eps, true
			return attack.CBIM(ens, x, y, c)
		},
	}
}

// cbimBest is C-BIM returning each example's most conferrable iterate.
const cbimBest = "C-BIM best iterate"

// Run measures every attack at every ε on the testing models and writes the
// report into dir.
func (st *ConferrabilityStudy) Run(ctx context.Context, f *Fleet, test *data.Dataset, dir report.Dir, progress shared.Reporter) ([]*AttackScore, error) {
	if err := dir.Create(); err != nil {
		return nil, err
	}
	src := f.Source()
	pred, err := (&suspect.Local{Model: src.Model, Name: src.Name}).Classify(ctx, suspect.Images{X: test.Float32(seq(test.Len())), N: test.Len(), C: test.C, H: test.H, W: test.W})
	if err != nil {
		return nil, err
	}
	var start []int
	for i, p := range pred {
		if p == test.Labels[i] && len(start) < st.Points {
			start = append(start, i)
		}
	}
	testS, testR := f.Select(Surrogate, true), f.Select(Reference, true)
	order, crafts := st.attacks(f)
	var scores []*AttackScore
	total := int64(len(order) * len(st.Eps))
	for ai, name := range order {
		for ei, eps := range st.Eps {
			progress.Report(shared.Event{Kind: shared.Progress, Stage: "conferrability study", Step: int64(ai*len(st.Eps) + ei), Total: total,
				Metrics: map[string]float64{"eps": eps}, Message: name})
			sc := &AttackScore{Attack: name, Eps: eps, All: len(start)}
			var sumT, sumC float64
			for b := 0; b < len(start); b += st.Batch {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				idx := start[b:min(b+st.Batch, len(start))]
				n := len(idx)
				x := test.Float32(idx)
				y := make([]int64, n)
				for i, j := range idx {
					y[i] = test.Labels[j]
				}
				var adv []float32
				var cerr error
				err := torch.Catch(func() {
					torch.Scoped(func(s *torch.Scope) {
						xt := torch.FromSlice(s, x, int64(n), int64(test.C), int64(test.H), int64(test.W))
						yt := torch.FromSlice(s, y, int64(n))
						xa, err := crafts[name](xt, yt, eps)
						if err != nil {
							cerr = err
							return
						}
						adv = attack.Quantize(xa, xt, eps).Float32s()
					})
				})
				if err == nil {
					err = cerr
				}
				if err != nil {
					return nil, fmt.Errorf("%s at ε = %g: %w", name, eps, err)
				}
				imgs := suspect.Images{X: adv, N: n, C: test.C, H: test.H, W: test.W}
				keys, err := (&suspect.Local{Model: src.Model, Name: src.Name}).Classify(ctx, imgs)
				if err != nil {
					return nil, err
				}
				sl, err := fingerprint.Labels(ctx, models(testS), imgs)
				if err != nil {
					return nil, err
				}
				rl, err := fingerprint.Labels(ctx, models(testR), imgs)
				if err != nil {
					return nil, err
				}
				tr, cf := fingerprint.Transfer(rl, keys), fingerprint.Confer(sl, rl, keys)
				for i := range n {
					if keys[i] == y[i] {
						continue // not adversarial for the source
					}
					sc.Examples++
					sumT += tr[i]
					sumC += cf[i]
					sc.PerExample = append(sc.PerExample, cf[i])
				}
			}
			sc.Success = float64(sc.Examples) / float64(max(sc.All, 1))
			if sc.Examples > 0 {
				sc.Transfer, sc.Confer = sumT/float64(sc.Examples), sumC/float64(sc.Examples)
			}
			scores = append(scores, sc)
			progress.Report(shared.Event{Kind: shared.Log, Stage: "conferrability study", Message: fmt.Sprintf("%-8s ε = %-5g success %.2f transfer %.3f confer %.3f", name, eps, sc.Success, sc.Transfer, sc.Confer)})
		}
	}
	return scores, st.write(dir, f, scores, len(start))
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func (st *ConferrabilityStudy) write(dir report.Dir, f *Fleet, scores []*AttackScore, points int) error {
	var md strings.Builder
	fmt.Fprintf(&md, "# Conferrability of adversarial attacks (the paper's Table 1, Figures 4–5, at CPU scale)\n\nReproduce with:\n\n    %s\n\n", st.Command)
	src := f.Source()
	fmt.Fprintf(&md, "Source: %s (%s, test accuracy %.4f). %d start points: test images the source classifies correctly. "+
		"Scores are over the successful examples (the source's label changed), with the source's label as target; Transfer (eq. 9) over the %d testing references, Confer (eq. 10) over the %d testing surrogates and the testing references; all examples rounded to 8 bits. "+
		"C-BIM attacks the ensemble of the source and the training models (%d surrogates, %d references, defender's half); no testing model took part. Parameters: Table 6 (IGM and PGD 100 steps of 0.01, PGD in L2, DeepFool 100 iterations in L∞, CW-L2 100 iterations κ = 50 lr 0.01 with 3 binary-search steps), every result projected onto the L∞ ε-ball. PGD's own budget is an L2 ball of radius ε (Table 6's q = 2), far smaller than the L∞ ball of the same ε, which is why it changes few labels.\n\n",
		src.Name, src.Arch, src.TestAcc, points, len(f.Select(Reference, true)), len(f.Select(Surrogate, true)), len(f.Select(Surrogate, false)), len(f.Select(Reference, false)))
	var rows [][]string
	best := map[string]float64{}
	for _, s := range scores {
		if s.Eps == st.Focus {
			rows = append(rows, []string{s.Attack, fmt.Sprintf("%.2f", s.Success), fmt.Sprintf("%.3f", s.Transfer), fmt.Sprintf("%.3f", s.Confer), fmt.Sprint(s.Examples)})
			best[s.Attack] = s.Confer
		}
	}
	fmt.Fprintf(&md, "## Table 1 at ε = %g\n\n", st.Focus)
	report.Table(&md, []string{"method", "success", "transferable", "conferrable", "examples"}, rows)
	var baseline float64
	var baseName string
	for a, c := range best {
		if !strings.HasPrefix(a, "C-BIM") && c > baseline {
			baseline, baseName = c, a
		}
	}
	if baseline > 0 {
		fmt.Fprintf(&md, "C-BIM's mean conferrability is **%.2f×** the best baseline's (%s); returning each example's first most conferrable iterate (%s) makes it **%.2f×**.\n\n",
			best["C-BIM"]/baseline, baseName, cbimBest, best[cbimBest]/baseline)
	}
	rows = nil
	header := []string{"method"}
	for _, e := range st.Eps {
		header = append(header, fmt.Sprintf("ε = %g", e))
	}
	series := map[string]*report.Series{}
	var order []string
	for _, s := range scores {
		if _, ok := series[s.Attack]; !ok {
			series[s.Attack] = &report.Series{Name: s.Attack}
			order = append(order, s.Attack)
		}
		series[s.Attack].X = append(series[s.Attack].X, s.Eps)
		series[s.Attack].Y = append(series[s.Attack].Y, s.Confer)
	}
	var lines, hists []report.Series
	for _, a := range order {
		row := []string{a}
		for _, v := range series[a].Y {
			row = append(row, fmt.Sprintf("%.3f", v))
		}
		rows = append(rows, row)
		lines = append(lines, *series[a])
	}
	for _, s := range scores {
		if s.Eps == st.Focus {
			hists = append(hists, report.Series{Name: s.Attack, Y: s.PerExample})
		}
	}
	fmt.Fprintf(&md, "## Mean conferrability against ε (Figure 4)\n\n")
	report.Table(&md, header, rows)
	if err := report.Lines(dir.Path("conferrability_vs_eps.png"), "Conferrability on testing models", "ε (L∞)", "mean conferrability", lines); err != nil {
		return err
	}
	if err := report.Histogram(dir.Path("conferrability_hist.png"), fmt.Sprintf("Per-example conferrability at ε = %g", st.Focus), "conferrability", "fraction of examples", hists, 10); err != nil {
		return err
	}
	fmt.Fprintf(&md, "![conferrability against ε](conferrability_vs_eps.png)\n\n## Per-example conferrability at ε = %g (Figure 5)\n\n![histogram](conferrability_hist.png)\n", st.Focus)
	return os.WriteFile(dir.Path("README.md"), []byte(md.String()), 0o644)
}
