package train_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/train"
)

// TestAttackRegistry checks every row of the registry: a name of its own, a
// one-line summary, ParseAttack finding it, the defaults that FineTuning,
// DefaultExamples and AttackConfig read from it, and the parameters it
// records. An unknown name is refused by ParseAttack and Derive, both naming
// the attacks there are.
func TestAttackRegistry(t *testing.T) {
	// The parameters each attack records beside the recipe's.
	own := map[string][]string{
		train.AttackRetraining: nil,
		train.AttackJagielski:  {"temperature"},
		train.AttackKnockoff:   nil, // "transfer" once there is a transfer set
		train.AttackPapernot:   {"lambda", "rounds", "seeds"},
		train.AttackFTLL:       nil,
		train.AttackFTAL:       nil,
		train.AttackRTLL:       nil,
		train.AttackRTAL:       nil,
		train.AttackFGM:        {"adv_fraction", "eps", "norm"},
		train.AttackPGD:        {"adv_fraction", "alpha", "eps", "norm", "steps"},
		train.AttackEnsemble:   {"members"},
		train.AttackNoise:      {"lambda"},
		train.AttackTrueLabels: {"rho"},
		train.AttackPrune:      {"fraction"},
		train.AttackQuantize:   {"bits"},
		train.AttackFinePrune:  {"fraction"},
		train.AttackPGDAT:      {"alpha", "eps", "norm", "steps"},
		train.AttackTRADES:     {"alpha", "beta", "eps", "norm", "steps"},
		train.AttackCombined:   {"bits", "fraction", "steps", "temperature"},
	}
	reg := train.Registry()
	var names []string
	for _, a := range reg {
		names = append(names, a.Name)
	}
	if !slices.Equal(names, train.Attacks()) {
		t.Errorf("Registry names %v, Attacks %v", names, train.Attacks())
	}
	if got := slices.Sorted(maps.Keys(own)); !slices.Equal(got, slices.Sorted(slices.Values(names))) {
		t.Errorf("registered %v, this test knows %v", names, got)
	}
	for _, a := range reg {
		t.Run(a.Name, func(t *testing.T) {
			if a.Name == "" || a.Name != strings.ToLower(strings.TrimSpace(a.Name)) {
				t.Errorf("name %q", a.Name)
			}
			if n := len(slices.DeleteFunc(slices.Clone(names), func(s string) bool { return s != a.Name })); n != 1 {
				t.Errorf("name %q registered %d times", a.Name, n)
			}
			if strings.TrimSpace(a.Summary) == "" || strings.Contains(a.Summary, "\n") {
				t.Errorf("summary %q: want one non-empty line", a.Summary)
			}
			got, err := train.ParseAttack(a.Name)
			if err != nil || got.Name != a.Name || got.Summary != a.Summary || got.Trains != a.Trains || got.FineTunes != a.FineTunes {
				t.Errorf("ParseAttack(%q) = %+v, %v", a.Name, got, err)
			}
			if train.FineTuning(a.Name) != a.FineTunes {
				t.Errorf("FineTuning %v, row says %v", train.FineTuning(a.Name), a.FineTunes)
			}
			if a.FineTunes && !a.Trains {
				t.Error("fine-tunes without training")
			}
			cfg := train.AttackConfig(a.Name)
			wantEpochs, wantLR, wantExamples := 10, 0.05, 0
			if a.FineTunes {
				wantEpochs, wantLR, wantExamples = 5, 0.01, 10000 // §6.3
			}
			if cfg.Epochs != wantEpochs || cfg.LR != wantLR {
				t.Errorf("AttackConfig: %d epochs at lr %v, want %d at %v", cfg.Epochs, cfg.LR, wantEpochs, wantLR)
			}
			if n := train.DefaultExamples(a.Name); n != wantExamples {
				t.Errorf("DefaultExamples %d, want %d", n, wantExamples)
			}
			want := slices.Clone(own[a.Name])
			if a.Trains {
				want = append(want, "epochs", "lr", "optimizer")
			}
			slices.Sort(want)
			p := a.Params(train.DefaultOptions(a.Name), cfg)
			if keys := slices.Sorted(maps.Keys(p)); !slices.Equal(keys, want) {
				t.Errorf("Params names %v, want %v", keys, want)
			}
			for k, v := range p {
				if v == "" {
					t.Errorf("parameter %s is empty", k)
				}
			}
		})
	}
	if a, _ := train.ParseAttack(train.AttackPrune); a.Trains {
		t.Error("pruning trains")
	}
	if a, _ := train.ParseAttack(train.AttackQuantize); a.Trains {
		t.Error("quantization trains")
	}
	for _, bad := range []string{"", "melt", "FTLL", " ftll", "ftll "} {
		_, err := train.ParseAttack(bad)
		if err == nil || !strings.Contains(err.Error(), strings.Join(train.Attacks(), ", ")) {
			t.Errorf("ParseAttack(%q): %v, want an error listing the attacks", bad, err)
		}
		// Derive refuses before it looks at the source or the data.
		m, der, err := train.Derive(context.Background(), bad, nil, nil, train.Options{}, train.Config{})
		if err == nil || m != nil || der != nil || !strings.Contains(err.Error(), train.AttackRetraining) {
			t.Errorf("Derive(%q): %v, %v, %v; want an error listing the attacks", bad, m, der, err)
		}
	}
}
