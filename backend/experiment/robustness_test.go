package experiment

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/train"
)

// TestRobustnessBudget runs the study from a source of its own, with no
// fleet to contrast: a row with a budget stops at the first rung within
// the margin, or spends the whole ladder and says so in the report's
// failures; each rung is a cached model of its own; the report names the
// dataset and has no contrast section.
func TestRobustnessBudget(t *testing.T) {
	ds := tinyData(t)
	f, fp := tinyFingerprint(t, t.TempDir(), ds)
	defer f.Free()
	row := func(margin float64) (*RobustnessStudy, Attack) {
		c := train.AttackConfig(train.AttackRetraining)
		c.Epochs = 1
		a := Attack{Group: "g", Name: train.AttackRetraining, Param: "T = 1", Options: train.DefaultOptions(train.AttackRetraining), Config: c, Budget: []int{1, 2}}
		return &RobustnessStudy{Attacks: []Attack{a}, Theta: 0.7, Margin: margin, Command: "test", Describe: "Dataset: Fashion-MNIST (tiny)."}, a
	}
	src := StudySource{Model: f.Source().Model, Key: "test-source"}
	models := t.TempDir()
	// A margin of 1 takes any model: the first rung.
	st, _ := row(1)
	res, err := st.RunSource(context.Background(), src, nil, fp, ds, models, report.Dir(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Derived[0]; d.Config.Epochs != 1 || d.Spent != 1 || d.Seconds <= 0 || res.References != nil {
		t.Errorf("margin 1: stopped at %d epochs, %d spent, %v s, %d references", d.Config.Epochs, d.Spent, d.Seconds, len(res.References))
	}
	// A negative margin takes none: the whole ladder, reported as such.
	st, _ = row(-1)
	dir := report.Dir(t.TempDir())
	res, err = st.RunSource(context.Background(), src, nil, fp, ds, models, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := res.Derived[0]
	if d.Config.Epochs != 2 || d.Spent != 3 || d.FromDisk || res.Useful != 0 {
		t.Errorf("margin -1: stopped at %d epochs, %d spent, from disk %v, %d useful", d.Config.Epochs, d.Spent, d.FromDisk, res.Useful)
	}
	b, err := os.ReadFile(dir.Path("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{"Dataset: Fashion-MNIST (tiny).", "## Failures", "did not come within -100 points of the source in its budget: 3 epochs spent over rungs of 1, 2", "2 (budget 1, 2; 3 spent; earlier rungs 1: 0.", "1 rows, 1 distinct models"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "For contrast") {
		t.Error("a study without a fleet has a contrast section")
	}
	// A ladder of Papernot's rounds: each rung doubles the queries.
	c := train.AttackConfig(train.AttackPapernot)
	c.Epochs = 1
	pa := Attack{Group: "g", Name: train.AttackPapernot, Param: "20 seeds", Options: train.DefaultOptions(train.AttackPapernot), Config: c, Budget: []int{1, 2}, BudgetRounds: true}
	pa.Options.Papernot.Seeds, pa.Options.Papernot.Rounds = 20, 1
	pst := &RobustnessStudy{Attacks: []Attack{pa}, Theta: 0.7, Margin: -1, Command: "test"}
	pres, err := pst.RunSource(context.Background(), src, nil, fp, ds, models, report.Dir(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := pres.Derived[0]; d.Options.Papernot.Rounds != 2 || d.Queries != 40 || d.Spent != 3 || d.Config.Epochs != 1 {
		t.Errorf("rounds ladder: stopped at %d rounds, %d queries, %d spent, %d epochs", d.Options.Papernot.Rounds, d.Queries, d.Spent, d.Config.Epochs)
	}
	// Fine-pruning needs a convolution: for this MLP source the row is
	// left out, and the report says so, rather than failing the study.
	fc := train.AttackConfig(train.AttackFinePrune)
	fc.Epochs = 1
	fst := &RobustnessStudy{Attacks: []Attack{{Group: "g", Name: train.AttackFinePrune, Param: "50%", Options: train.DefaultOptions(train.AttackFinePrune), Config: fc}, pa},
		Theta: 0.7, Margin: -1, Command: "test"}
	fdir := report.Dir(t.TempDir())
	fres, err := fst.RunSource(context.Background(), src, nil, fp, ds, models, fdir, nil)
	if err != nil {
		t.Fatalf("a study with fine-pruning on an MLP source: %v", err)
	}
	if len(fres.Derived) != 1 || fres.Derived[0].Attack.Name != train.AttackPapernot || len(fst.Attacks) != 2 {
		t.Errorf("rows %d (first %+v), the study's own attacks %d: want Papernot's alone, the study unchanged", len(fres.Derived), fres.Derived[0].Attack.Name, len(fst.Attacks))
	}
	if b, err := os.ReadFile(fdir.Path("README.md")); err != nil || !strings.Contains(string(b), "Fine-pruning is left out: the source (mlp) has no convolutional layer") {
		t.Errorf("the report does not say fine-pruning was left out (%v)", err)
	}
	// Again: both rungs come from the cache.
	res, err = st.RunSource(context.Background(), src, nil, fp, ds, models, report.Dir(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Derived[0]; !d.FromDisk || d.Spent != 3 {
		t.Errorf("second run: from disk %v, %d spent", d.FromDisk, d.Spent)
	}
}
