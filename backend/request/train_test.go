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
