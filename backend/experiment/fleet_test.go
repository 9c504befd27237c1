package experiment

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
)

// TestCacheKeys pins the cache keys of a plan without recipes (models
// trained before recipes existed stay valid) and shows that a recipe is
// part of a member's key.
func TestCacheKeys(t *testing.T) {
	const src = "lenet/source/3/1/tag"
	find := func(plan []*Member, name string) *Member {
		i := slices.IndexFunc(plan, func(m *Member) bool { return m.Name == name })
		if i < 0 {
			t.Fatalf("no member %s", name)
		}
		return plan[i]
	}
	plain := Plan("lenet", []string{"mlp", "cnn"}, 1, 2)
	adamw := train.RecipeFor(train.OptAdamW)
	for _, c := range []struct {
		name   string
		member func() *Member
		want   string
	}{
		{"source", func() *Member { return find(plain, "source") }, src},
		{"surrogate", func() *Member { return find(plain, "train-surrogate-mlp-0") }, "mlp/surrogate/4/101/tag/teacher=" + src},
		{"reference", func() *Member { return find(plain, "test-reference-cnn-0") }, "cnn/reference/2/108/tag"},
		{"soft surrogate", func() *Member {
			m := *find(plain, "train-surrogate-cnn-0")
			m.Labels = SoftLabels
			return &m
		}, "cnn/surrogate/2/103/tag/teacher=" + src + "/labels=soft"},
		{"a recipe, with the member's epochs and labels", func() *Member {
			m := *find(plain, "train-reference-cnn-0")
			m.Recipe = &adamw
			return &m
		}, "cnn/reference/2/104/tag/recipe=adamw,lr=0.001,sched=cosine,bs=128,epochs=2,wd=0.01,aug=crop+flip,labels=hard,share=1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.member().cacheKey("tag", src); got != c.want {
				t.Errorf("key %q, want %q", got, c.want)
			}
		})
	}
}

// TestWithRecipes samples a recipe for every surrogate and reference,
// reproducibly, with the plan's epochs, and diverse.
func TestWithRecipes(t *testing.T) {
	plan := WithRecipes(Plan("lenet", []string{"mlp", "lenet"}, 2, 3), 7)
	again := WithRecipes(Plan("lenet", []string{"mlp", "lenet"}, 2, 3), 7)
	other := WithRecipes(Plan("lenet", []string{"mlp", "lenet"}, 2, 3), 8)
	opts := map[string]bool{}
	augs := map[string]bool{}
	differs := false
	for i, m := range plan {
		if m.Role == Source {
			if m.Recipe != nil {
				t.Errorf("the source has recipe %v, want Conferral's", m.Recipe)
			}
			continue
		}
		if m.Recipe == nil {
			t.Fatalf("%s has no recipe", m.Name)
		}
		r := m.recipe()
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", m.Name, err)
		}
		if m.Recipe.Epochs != m.Epochs || r.Epochs != m.Epochs {
			t.Errorf("%s: recipe of %d epochs, the plan gives %d", m.Name, r.Epochs, m.Epochs)
		}
		if m.Role == Reference && r.Labels != train.LabelsHard {
			t.Errorf("%s: a reference learns %s labels", m.Name, r.Labels)
		}
		if m.Role == Surrogate && r.Labels != m.Labels {
			t.Errorf("%s: labels %q, recipe %q", m.Name, m.Labels, r.Labels)
		}
		if *again[i].Recipe != *m.Recipe {
			t.Errorf("%s: seed 7 gave %v, then %v", m.Name, m.Recipe, again[i].Recipe)
		}
		differs = differs || *other[i].Recipe != *m.Recipe
		opts[r.Optimizer], augs[r.Augment] = true, true
	}
	if !differs {
		t.Error("seeds 7 and 8 gave the same recipes")
	}
	if len(opts) != len(train.Optimizers()) || len(augs) != len(train.Augmentations()) {
		t.Errorf("16 members: optimizers %v, augmentations %v, want every one", opts, augs)
	}
}

// TestFleetRecipes trains a fleet of sampled recipes: each file records
// the recipe its model trained by, the fleet is reused as long as the
// recipes are the same, and other recipes retrain all but the source.
func TestFleetRecipes(t *testing.T) {
	ds := tinyData(t)
	dir := t.TempDir()
	build := func(seed uint64) *Fleet {
		t.Helper()
		f, err := Build(context.Background(), dir, WithRecipes(Plan("mlp", []string{"mlp"}, 1, 1), seed), ds, torch.CPU, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := build(3)
	for _, m := range f.Members {
		file, err := safetensors.ReadFile(filepath.Join(dir, m.Name+".safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		got, ok, err := train.RecipeOf(file.Metadata)
		want := m.recipe()
		want.Dropout = m.Model.Spec.Dropout // what the model has (TrainedRecipe)
		if err != nil || !ok || got != want {
			t.Errorf("%s records recipe %q (%v, %v), want %q", m.Name, file.Metadata[train.MetaRecipe], ok, err, want)
		}
		if m.Role != Source && !strings.Contains(file.Metadata["fleet.key"], "/recipe=") {
			t.Errorf("%s: key %q names no recipe", m.Name, file.Metadata["fleet.key"])
		}
	}
	f.Free()
	for _, c := range []struct {
		seed     uint64
		fromDisk func(*Member) bool
	}{
		{3, func(*Member) bool { return true }},
		{4, func(m *Member) bool { return m.Role == Source }},
	} {
		f := build(c.seed)
		for _, m := range f.Members {
			if m.FromDisk != c.fromDisk(m) {
				t.Errorf("seed %d: %s (%v) loaded from disk = %v", c.seed, m.Name, m.Recipe, m.FromDisk)
			}
		}
		f.Free()
	}
}
