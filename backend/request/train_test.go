package request

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// TestTrain: a train request's recipe and fields make the training, zeros
// of momentum and weight decay included, and without a teacher the labels
// are hard whatever the recipe says.
func TestTrain(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       func(r *train.Recipe)
	}{
		{"defaults", `{}`, func(r *train.Recipe) {}},
		{"fields over the default", `{"epochs":3,"batch_size":32,"lr":0.1,"no_augment":true,"schedule":"constant"}`, func(r *train.Recipe) {
			r.Epochs, r.BatchSize, r.LR, r.Augment, r.Schedule = 3, 32, 0.1, train.AugNone, train.SchedConstant
		}},
		{"zero momentum and decay", `{"momentum":0,"weight_decay":0}`, func(r *train.Recipe) { r.Momentum, r.WeightDecay = 0, 0 }},
		{"another optimizer brings its own", `{"optimizer":"adamw"}`, func(r *train.Recipe) { *r = train.RecipeFor(train.OptAdamW) }},
		{"a recipe, epochs over it, labels hard", `{"recipe":"adam,labels=soft,epochs=4","epochs":2}`, func(r *train.Recipe) {
			*r, _ = train.ParseRecipe("adam,epochs=2")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a shared.TrainArgs
			if err := json.Unmarshal([]byte(tc.body), &a); err != nil {
				t.Fatal(err)
			}
			c, err := Train(a)
			if err != nil {
				t.Fatal(err)
			}
			want := train.DefaultRecipe()
			tc.want(&want)
			if got := c.Recipe(); got != want || c.Seed != 1 {
				t.Errorf("%s: recipe %s seed %d, want %s seed 1", tc.body, got, c.Seed, want)
			}
		})
	}
	for _, tc := range []struct{ body, want string }{
		{`{"optimizer":"rmsprop"}`, `optimizer "rmsprop"`},
		{`{"lr":-1}`, "must not be negative"},
		{`{"epochs":1001}`, "epochs 1001: want 0 to 1000"},
		{`{"recipe":"adam,epochs=5000"}`, "recipe: epochs 5000"},
		{`{"recipe":"adam","momentum":0.9}`, "momentum"},
	} {
		var a shared.TrainArgs
		if err := json.Unmarshal([]byte(tc.body), &a); err != nil {
			t.Fatal(err)
		}
		if _, err := Train(a); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.body, err, tc.want)
		}
	}
}

// TestDerive: a derive request takes the attack's defaults, and its zeros
// that mean something (no noise, no true labels, all examples) reach the
// attack.
func TestDerive(t *testing.T) {
	d, err := Derive(shared.DeriveArgs{Attack: train.AttackFTAL})
	if err != nil {
		t.Fatal(err)
	}
	if d.Examples != train.DefaultExamples(train.AttackFTAL) || d.Config.Recipe() != train.AttackConfig(train.AttackFTAL).Recipe() || !d.Attack.Trains {
		t.Errorf("fine-tuning's defaults: %d examples, recipe %s", d.Examples, d.Config.Recipe())
	}
	var a shared.DeriveArgs
	if err := json.Unmarshal([]byte(`{"attack":"noise","lambda":0,"rho":0,"examples":0,"temperature":3,"members":4,"epochs":2,"momentum":0}`), &a); err != nil {
		t.Fatal(err)
	}
	if d, err = Derive(a); err != nil {
		t.Fatal(err)
	}
	if o := d.Options; o.Lambda != 0 || o.Rho != 0 || d.Examples != 0 || o.Temperature != 3 || o.Members != 4 || d.Config.Epochs != 2 || d.Config.Momentum != 0 {
		t.Errorf("zeros and settings: %+v, %d examples, %+v", o, d.Examples, d.Config)
	}
	if d, _ = Derive(shared.DeriveArgs{Attack: "noise"}); d.Options.Lambda != train.DefaultOptions("noise").Lambda || d.Options.Rho != train.DefaultOptions("noise").Rho {
		t.Errorf("nil λ and ρ take the defaults: %+v", d.Options)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"attack":"melt"}`, `attack "melt"`},
		{`{"attack":"prune","recipe":"adam"}`, "trains nothing"},
		{`{"attack":"noise","lambda":-1}`, "lambda -1"},
		{`{"attack":"true-labels","rho":1.5}`, "rho 1.5"},
		{`{"attack":"retraining","examples":-1}`, "examples -1"},
		{`{"attack":"ensemble","members":33}`, "members 33"},
		{`{"attack":"quantize","bits":1}`, "bits 1"},
	} {
		var a shared.DeriveArgs
		if err := json.Unmarshal([]byte(tc.body), &a); err != nil {
			t.Fatal(err)
		}
		if _, err := Derive(a); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.body, err, tc.want)
		}
	}
}

// TestDeriveAdversarialAndCombined: the adversarial settings reach the
// options of the attack that uses them (AdvOpts for fgm and pgd, the
// robust options for pgd-at and trades), β = 0 survives, the combined
// attack's steps are checked by train.ParseSteps, and a setting for an
// attack that does not use it, or out of range, is refused.
func TestDeriveAdversarialAndCombined(t *testing.T) {
	for _, tc := range []struct {
		body string
		want func(o *train.Options)
	}{
		{`{"attack":"fgm","adv_eps":0.2}`, func(o *train.Options) { o.Adv.Eps = 0.2 }},
		{`{"attack":"pgd","adv_eps":0.5,"adv_alpha":0.02,"adv_steps":10}`, func(o *train.Options) { o.Adv.Eps, o.Adv.Alpha, o.Adv.Steps = 0.5, 0.02, 10 }},
		{`{"attack":"pgd-at","adv_eps":0.2,"adv_alpha":0.05,"adv_steps":3}`, func(o *train.Options) { o.Robust.Eps, o.Robust.Alpha, o.Robust.Steps = 0.2, 0.05, 3 }},
		{`{"attack":"trades","beta":0}`, func(o *train.Options) { o.Robust.Beta = 0 }},
		{`{"attack":"trades","adv_steps":2,"beta":1.5}`, func(o *train.Options) { o.Robust.Steps, o.Robust.Beta = 2, 1.5 }},
		{`{"attack":"trades"}`, func(o *train.Options) {}},
		{`{"attack":"combined","steps":"retrain,prune","fraction":0.3}`, func(o *train.Options) { o.Steps, o.Fraction = "retrain,prune", 0.3 }},
	} {
		var a shared.DeriveArgs
		if err := json.Unmarshal([]byte(tc.body), &a); err != nil {
			t.Fatal(err)
		}
		d, err := Derive(a)
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		want := train.DefaultOptions(a.Attack)
		tc.want(&want)
		if d.Options != want {
			t.Errorf("%s: options %+v, want %+v", tc.body, d.Options, want)
		}
	}
	for _, tc := range []struct{ body, want string }{
		{`{"attack":"combined","steps":"distill,melt"}`, `unknown step "melt"`},
		{`{"attack":"combined","steps":"prune,distill"}`, "only be the first step"},
		{`{"attack":"combined","steps":","}`, "unknown step"},
		{`{"attack":"pgd","steps":"prune"}`, "steps: pgd does not use it"},
		{`{"attack":"pgd-at","beta":1}`, "beta: pgd-at does not use it"},
		{`{"attack":"fgm","adv_alpha":0.1}`, "adv_alpha: fgm does not use it"},
		{`{"attack":"fgm","adv_steps":3}`, "adv_steps: fgm does not use it"},
		{`{"attack":"retraining","adv_eps":0.1}`, "adv_eps: retraining does not use it"},
		{`{"attack":"noise","beta":0}`, "beta: noise does not use it"},
		{`{"attack":"pgd-at","adv_eps":1.5}`, "adv_eps 1.5"},
		{`{"attack":"pgd","adv_eps":-1}`, "adv_eps -1"},
		{`{"attack":"trades","adv_alpha":-0.1}`, "adv_alpha -0.1"},
		{`{"attack":"trades","adv_steps":-2}`, "adv_steps -2"},
		{`{"attack":"pgd","adv_steps":1001}`, "adv_steps 1001"},
		{`{"attack":"trades","beta":-1}`, "beta -1"},
	} {
		var a shared.DeriveArgs
		if err := json.Unmarshal([]byte(tc.body), &a); err != nil {
			t.Fatal(err)
		}
		if _, err := Derive(a); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.body, err, tc.want)
		}
	}
}
