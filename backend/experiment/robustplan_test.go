package experiment

import (
	"slices"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/train"
)

// TestRobustnessPlan checks the plan's rows and settings: fine-tuning and
// adversarial training see FineTuneExamples of the adversary's half for
// FineTuneEpochs, the others all of it for Epochs; Knockoff learns from
// the transfer set; one row per λ and ρ; the labels-only row last.
func TestRobustnessPlan(t *testing.T) {
	adv := &data.Dataset{Name: "adv", N: 30, C: 1, H: 1, W: 1, Images: make([]uint8, 30), Labels: make([]int64, 30)}
	p := DefaultRobustnessPlan()
	if _, err := p.Attacks(adv); err == nil {
		t.Error("a plan without a transfer set listed its attacks")
	}
	p.Epochs, p.FineTuneEpochs, p.FineTuneExamples = 3, 1, 10
	p.Lambdas, p.Rhos = []float64{0.1, 0.3}, []float64{0.2}
	p.Transfer = &data.Dataset{Name: "mnist"}
	st, err := p.Study(adv, "cmd")
	if err != nil {
		t.Fatal(err)
	}
	if st.Theta != 0.7 || st.Margin != 0.05 || st.Command != "cmd" {
		t.Errorf("judged at θ = %g, margin %g, command %q", st.Theta, st.Margin, st.Command)
	}
	if n := len(st.Attacks); n != 11+2+1+3 {
		t.Fatalf("%d attacks, want 17", n)
	}
	noise, rho := 0, 0
	for _, a := range st.Attacks {
		fine := train.FineTuning(a.Name)
		switch {
		case fine && (a.Data == nil || a.Data.Len() != 10 || a.Config.Epochs != 1):
			t.Errorf("%s %s: %v examples, %d epochs; want 10 and 1", a.Name, a.Param, a.Data, a.Config.Epochs)
		case !fine && (a.Data != nil || a.Config.Epochs != 3):
			t.Errorf("%s %s: its own data %v, %d epochs; want the adversary's half and 3", a.Name, a.Param, a.Data, a.Config.Epochs)
		}
		switch a.Name {
		case train.AttackKnockoff:
			if a.Options.Transfer != p.Transfer || a.Param != "transfer mnist (out of distribution)" {
				t.Errorf("knockoff: transfer %v, %q", a.Options.Transfer, a.Param)
			}
		case train.AttackNoise:
			if a.Options.Lambda != p.Lambdas[noise] {
				t.Errorf("noise row %d: λ = %g", noise, a.Options.Lambda)
			}
			noise++
		case train.AttackTrueLabels:
			if a.Options.Rho != p.Rhos[rho] {
				t.Errorf("true-labels row %d: ρ = %g", rho, a.Options.Rho)
			}
			rho++
		}
	}
	if last := st.Attacks[len(st.Attacks)-1]; !last.LabelsOnly || last.Name != train.AttackRetraining {
		t.Errorf("last row %s, labels only %v", last.Name, last.LabelsOnly)
	}
	// The transfer set takes the source's classes and loses its labels; a
	// set of another shape is refused.
	tr := &data.Dataset{Name: "mnist", N: 2, C: 1, H: 28, W: 28, Labels: []int64{3, 4}, Classes: []string{"0"}}
	if _, err := AsTransfer(tr, nn.Spec{C: 1, H: 28, W: 28}, []string{"a", "b"}); err != nil || tr.Labels[0] != 0 || tr.Labels[1] != 0 || len(tr.Classes) != 2 {
		t.Errorf("transfer: %v, labels %v, classes %v", err, tr.Labels, tr.Classes)
	}
	if _, err := AsTransfer(tr, nn.Spec{C: 3, H: 32, W: 32}, nil); err == nil {
		t.Error("a 1x28x28 transfer set was taken for a 3x32x32 source")
	}
	if name, err := DefaultTransfer("fashion-mnist"); name != "mnist" || err != nil {
		t.Errorf("default transfer for fashion-mnist: %q, %v", name, err)
	}
	if _, err := DefaultTransfer("cifar10"); err == nil {
		t.Error("cifar10 got a default transfer set")
	}
}

// TestRobustnessPlanFull checks the full-strength plan (issue 17): the
// default plan's rows keep their settings except for the budgets of
// Ensemble and Papernot, whose first rung they train; Knockoff gets a
// second row on the adversary's half augmented; pruning with fine-tuning
// (a budget of fine-tuning epochs on FineTuneExamples), fine-pruning,
// PGD-AT, TRADES and one combined row per spec join; a spec naming an
// unknown step is refused by Attacks.
func TestRobustnessPlanFull(t *testing.T) {
	adv := &data.Dataset{Name: "adv", N: 30, C: 1, H: 2, W: 2, Images: make([]uint8, 120), Labels: make([]int64, 30), Classes: []string{"a", "b"}}
	base := DefaultRobustnessPlan()
	base.Transfer, base.FineTuneExamples = &data.Dataset{Name: "mnist"}, 10
	plain, err := base.Attacks(adv)
	if err != nil {
		t.Fatal(err)
	}
	p := base.FullStrength()
	if !p.Full || len(p.CombinedSteps) != 2 || p.RobustEpochs <= 0 {
		t.Fatalf("full strength: %+v", p)
	}
	st, err := p.Study(adv, "cmd")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Notes, "out of distribution") || !strings.Contains(st.Notes, "augmented") {
		t.Errorf("notes do not say why the transfer sets: %q", st.Notes)
	}
	if n := len(st.Attacks); n != len(plain)+1+4+2 {
		t.Errorf("%d rows, want the default's %d, a second Knockoff, four more beyond the paper and two combined", n, len(plain))
	}
	rows := map[string]Attack{}
	for _, a := range st.Attacks {
		rows[a.Name+"|"+a.Param] = a
	}
	for _, a := range plain {
		if a.Name == train.AttackPapernot { // a ladder of rounds, at its paper's epochs per round
			b := rows[a.Name+"|150 seeds, 10 epochs per round"]
			if !b.BudgetRounds || !slices.Equal(b.Budget, p.PapernotBudget) || b.Options.Papernot.Rounds != p.PapernotBudget[0] || b.Config.Epochs != p.PapernotEpochs {
				t.Errorf("papernot: budget %v of rounds %v, %d rounds at %d epochs", b.Budget, b.BudgetRounds, b.Options.Papernot.Rounds, b.Config.Epochs)
			}
			continue
		}
		b, ok := rows[a.Name+"|"+a.Param]
		switch {
		case !ok:
			t.Errorf("full strength dropped %s %s", a.Name, a.Param)
		case a.Name == train.AttackEnsemble:
			if !slices.Equal(b.Budget, p.EnsembleBudget) || b.Config.Epochs != p.EnsembleBudget[0] || b.BudgetRounds {
				t.Errorf("%s: budget %v, epochs %d; want %v from its first", a.Name, b.Budget, b.Config.Epochs, p.EnsembleBudget)
			}
		case b.Budget != nil || b.Config.Epochs != a.Config.Epochs:
			t.Errorf("%s %s: budget %v, %d epochs; want the default's %d", a.Name, a.Param, b.Budget, b.Config.Epochs, a.Config.Epochs)
		}
	}
	aug := rows[train.AttackKnockoff+"|transfer adversary's half, augmented"]
	if aug.Options.Transfer == nil || aug.Options.Transfer.Len() != adv.Len() || aug.Options.Transfer.Name != "adv-augmented" || !slices.Equal(aug.Budget, p.KnockoffBudget) {
		t.Errorf("augmented Knockoff: transfer %+v", aug.Options.Transfer)
	}
	var combined []string
	for _, a := range st.Attacks {
		switch a.Name {
		case train.AttackCombined:
			combined = append(combined, a.Options.Steps)
			if a.Options.Steps == "prune,finetune" && (!slices.Equal(a.Budget, p.PruneBudget) || a.Data == nil || a.Data.Len() != 10) {
				t.Errorf("pruning with fine-tuning: budget %v on %v", a.Budget, a.Data)
			}
		case train.AttackFinePrune:
			if a.Data == nil || a.Data.Len() != 10 || a.Config.Epochs != p.FineTuneEpochs {
				t.Errorf("fine-pruning on %v for %d epochs", a.Data, a.Config.Epochs)
			}
		case train.AttackPGDAT, train.AttackTRADES:
			if a.Data != nil || a.Config.Epochs != p.RobustBudget[0] || !slices.Equal(a.Budget, p.RobustBudget) {
				t.Errorf("%s on %v for %d epochs, budget %v; want the whole half along %v", a.Name, a.Data, a.Config.Epochs, a.Budget, p.RobustBudget)
			}
		}
	}
	if want := append([]string{"prune,finetune"}, p.CombinedSteps...); !slices.Equal(combined, want) {
		t.Errorf("combined rows %v, want %v", combined, want)
	}
	p.CombinedSteps = []string{"distill,melt"}
	if _, err := p.Attacks(adv); err == nil || !strings.Contains(err.Error(), `unknown step "melt"`) {
		t.Errorf("an unknown step: %v", err)
	}
}
