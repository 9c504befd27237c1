package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
)

// --recipe trains by the recipe it names, single flags override it, and
// the model file, train's and derive's JSON and eval all carry it.
func TestTrainDeriveRecipe(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	small := []string{"--limit", "400", "--threads", "1", "--quiet", "--device", "cpu", "--json"}
	source := filepath.Join(dir, "source.safetensors")
	const recipe = "adamw,lr=0.002,sched=constant,aug=noise,ls=0.1,bs=32,epochs=3,share=0.5,dropout=0.2"
	code, stdout, stderr := invoke(t, ctx, append([]string{"train", "--arch", "widecnn", "--recipe", recipe, "--epochs", "1", "--out", source}, small...)...)
	if code != 0 {
		t.Fatalf("train: exit %d: %s", code, stderr)
	}
	want, err := train.ParseRecipe(recipe)
	if err != nil {
		t.Fatal(err)
	}
	want.Epochs = 1 // --epochs overrides the recipe
	var tr trainResult
	if err := json.Unmarshal([]byte(stdout), &tr); err != nil {
		t.Fatalf("train --json: %v in %q", err, stdout)
	}
	if tr.Recipe != want || len(tr.Epochs) != 1 {
		t.Errorf("train reports recipe %s over %d epochs, want %s", tr.Recipe, len(tr.Epochs), want)
	}
	m, meta, err := nn.Load(source, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	m.Free()
	if got, ok, err := train.RecipeOf(meta); !ok || err != nil || got != want || m.Spec.Dropout != 0.2 {
		t.Errorf("model file: recipe %s (%v, %v), dropout %v; want %s", got, ok, err, m.Spec.Dropout, want)
	}
	code, stdout, stderr = invoke(t, ctx, "eval", "--model", source, "--limit", "100", "--quiet", "--device", "cpu")
	if code != 0 || !strings.Contains(stdout, "trained by "+want.String()) {
		t.Errorf("eval: exit %d, %q %q; want the recipe shown", code, stdout, stderr)
	}

	// train --like: a twin, trained as the source was (architecture, split,
	// recipe with its overridden epochs) from another seed, which it must name.
	twin := filepath.Join(dir, "twin.safetensors")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--like", source}, "set --seed"},
		{[]string{"--like", source, "--seed", "1"}, "model's own seed"},
		{[]string{"--like", source, "--seed", "0"}, "model's own seed"}, // 0 reads as 1
		{[]string{"--like", source, "--seed", "2", "--teacher", source}, "drop --teacher"},
		{[]string{"--like", filepath.Join(dir, "missing.safetensors"), "--seed", "2"}, "--like"},
	} {
		code, _, stderr := invoke(t, ctx, append(append([]string{"train", "--out", twin}, tc.args...), small...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("train %q: exit %d, %q; want a usage error saying %q", tc.args, code, stderr, tc.want)
		}
	}
	code, stdout, stderr = invoke(t, ctx, append([]string{"train", "--like", source, "--seed", "7", "--out", twin}, small...)...)
	if code != 0 {
		t.Fatalf("train --like: exit %d: %s", code, stderr)
	}
	var tw trainResult
	if err := json.Unmarshal([]byte(stdout), &tw); err != nil {
		t.Fatalf("train --like --json: %v in %q", err, stdout)
	}
	if tw.Arch != "widecnn" || tw.Recipe != want || tw.Split != "defender" {
		t.Errorf("train --like: %s on %s by %s, want widecnn on defender by %s", tw.Arch, tw.Split, tw.Recipe, want)
	}

	// derive: the recipe replaces the attack's; its share is drawn before
	// the source is asked, soft labels reach Retraining.
	derived := filepath.Join(dir, "derived.safetensors")
	code, stdout, stderr = invoke(t, ctx, append([]string{"derive", "--attack", "retraining", "--source", source, "--arch", "mlpdrop",
		"--recipe", "sgd,lr=0.02,bs=25,epochs=1,aug=crop,labels=soft,share=0.25", "--out", derived}, small...)...)
	if code != 0 {
		t.Fatalf("derive: exit %d: %s", code, stderr)
	}
	var dr deriveResult
	if err := json.Unmarshal([]byte(stdout), &dr); err != nil {
		t.Fatalf("derive --json: %v in %q", err, stdout)
	}
	if dr.Queries != 100 || dr.Recipe == nil || dr.Recipe.Labels != train.LabelsSoft || dr.Recipe.Optimizer != train.OptSGD || dr.Train.Steps != 4 {
		t.Errorf("derive: %d queries, recipe %v, %d steps; want 100 queries of 400, soft sgd, 4 steps", dr.Queries, dr.Recipe, dr.Train.Steps)
	}
	_, meta, err = nn.Load(derived, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if meta[train.MetaRecipe] != dr.Recipe.String() {
		t.Errorf("derived model records %q, derive reported %s", meta[train.MetaRecipe], dr.Recipe)
	}
}

// A bad recipe or architecture is a usage error before anything is loaded
// or trained.
func TestRecipeUsageErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "m.safetensors")
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"train", "--recipe", "rmsprop"}, "rmsprop"},
		{[]string{"train", "--recipe", "adam,share=2"}, "share"},
		{[]string{"train", "--recipe", "adam,speed=3"}, "unknown key"},
		{[]string{"train", "--optimizer", "lbfgs"}, "lbfgs"},
		{[]string{"train", "--recipe", "adam", "--momentum", "0.9"}, "momentum"},
		{[]string{"train", "--arch", "transformer"}, "transformer"},
		{[]string{"derive", "--attack", "retraining", "--source", "nowhere.safetensors", "--recipe", "sgd,aug=mixup"}, "mixup"},
		{[]string{"derive", "--attack", "retraining", "--source", "nowhere.safetensors", "--arch", "transformer"}, "transformer"},
	} {
		code, _, stderr := invoke(t, context.Background(), append(tc.args, "--out", out, "--quiet", "--data", "no-such-dataset")...)
		if code != 2 || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, %q; want 2 naming %q", tc.args, code, stderr, tc.msg)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%v left a model file", tc.args)
		}
	}
}
