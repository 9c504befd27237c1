package server

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// TestRecipeRefused refuses a recipe that does not parse or is out of
// range with a 400 naming the problem, before anything is queued.
func TestRecipeRefused(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir()})
	trainJob := func(args string) string { return `{"kind":"train","train":{"arch":"mlp",` + args + `}}` }
	deriveJob := func(args string) string {
		return `{"kind":"derive","derive":{"source":"abc",` + args + `}}`
	}
	for _, c := range []struct {
		name, body, says string
	}{
		{"unknown key", trainJob(`"recipe":"adam,momentum=0.9"`), `unknown key "momentum"`},
		{"negative lr", trainJob(`"recipe":"sgd,lr=-1"`), "lr -1 is not positive"},
		{"unknown optimizer", trainJob(`"recipe":"rmsprop"`), `optimizer "rmsprop"`},
		{"unknown augmentation", trainJob(`"recipe":"aug=mixup"`), `augmentation "mixup"`},
		{"not a number", trainJob(`"recipe":"bs=many"`), `bs="many" is not a number`},
		{"share out of range", trainJob(`"recipe":"share=1.5"`), "share 1.5 is not in (0,1]"},
		{"too many epochs", trainJob(`"recipe":"epochs=5000"`), "epochs 5000: want at most 1000"},
		{"unknown optimizer field", trainJob(`"optimizer":"rmsprop"`), `optimizer "rmsprop": want one of sgd, sgd+nesterov, adam, adamw`},
		{"derive: bad recipe", deriveJob(`"attack":"ftal","recipe":"sched=linear"`), `schedule "linear"`},
		{"derive: pruning takes none", deriveJob(`"attack":"prune","recipe":"adam"`), "prune trains nothing"},
		{"derive: a good recipe reaches the model check", deriveJob(`"attack":"ftal","recipe":"adamw,epochs=2"`), `no stored model "abc"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", ts.http.URL+"/api/jobs", strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			var e shared.APIError
			if code := ts.do(req, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, c.says) {
				t.Errorf("%d %q, want 400 saying %q", code, e.Error, c.says)
			}
		})
	}
	var jobs []shared.Job
	ts.call("GET", "/api/jobs", nil, &jobs)
	if len(jobs) != 0 {
		t.Errorf("%d jobs recorded, want none", len(jobs))
	}
}

// TestRecipeRecorded trains and derives tiny models through POST /api/jobs
// and finds the recipe each was trained by in the job's result, in GET
// /api/models and in the stored model file's metadata.
func TestRecipeRecorded(t *testing.T) {
	dir := t.TempDir()
	ts := start(t, Config{Dir: dir})
	data := shared.DataArgs{Limit: 200}
	recipe := func(s string) string {
		t.Helper()
		r, err := train.ParseRecipe(s)
		if err != nil {
			t.Fatal(err)
		}
		return r.String()
	}
	var source string // the first case's model: the later ones' teacher and source
	for _, c := range []struct {
		name string
		req  func() shared.JobRequest
		want string // the recipe's compact form; empty: none recorded
	}{
		{"a recipe", func() shared.JobRequest {
			return shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{DataArgs: data, Name: "adamw", Arch: "mlp",
				Recipe: "adamw,lr=0.002,sched=constant,bs=32,epochs=1,aug=none,ls=0.1,share=0.5"}}
		}, recipe("adamw,lr=0.002,sched=constant,bs=32,epochs=1,wd=0.01,aug=none,ls=0.1,labels=hard,share=0.5")},
		{"fields over a recipe", func() shared.JobRequest {
			return shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{DataArgs: data, Name: "fields", Arch: "mlp",
				Recipe: "sgd,lr=0.1,bs=32,epochs=3,aug=crop", Optimizer: "adam", Epochs: 1, NoAugment: true, Seed: 7}}
		}, recipe("adam,bs=32,epochs=1,aug=none")},
		{"no recipe: the request's fields over Conferral's", func() shared.JobRequest {
			return tiny("plain", "defender", 1, "", 200)
		}, recipe("adam,lr=0.001,bs=64,epochs=1,aug=none")},
		{"a surrogate learns soft labels", func() shared.JobRequest {
			return shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{DataArgs: data, Name: "soft", Arch: "mlp",
				Teacher: source, Recipe: "adam,epochs=1,aug=none,labels=soft"}}
		}, recipe("adam,epochs=1,aug=none,labels=soft")},
		{"a reference's soft labels are moot", func() shared.JobRequest {
			return shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{DataArgs: data, Name: "ref", Arch: "mlp",
				Recipe: "adam,epochs=1,aug=none,labels=soft"}}
		}, recipe("adam,epochs=1,aug=none,labels=hard")},
		{"a derivation's recipe", func() shared.JobRequest {
			return shared.JobRequest{Kind: shared.JobDerive, Derive: &shared.DeriveArgs{DataArgs: data, Name: "ftal", Source: source,
				Attack: train.AttackFTAL, Recipe: "adam,lr=0.0005,aug=none", Epochs: 1}}
		}, recipe("adam,lr=0.0005,epochs=1,aug=none")},
		{"a derivation without one trains by the attack's", func() shared.JobRequest {
			return shared.JobRequest{Kind: shared.JobDerive, Derive: &shared.DeriveArgs{DataArgs: data, Name: "ftll", Source: source,
				Attack: train.AttackFTLL, Epochs: 1}}
		}, func() string {
			r := train.AttackConfig(train.AttackFTLL).Recipe()
			r.Epochs = 1
			return r.String()
		}()},
		{"pruning trains nothing", func() shared.JobRequest {
			return shared.JobRequest{Kind: shared.JobDerive, Derive: &shared.DeriveArgs{DataArgs: data, Name: "pruned", Source: source, Attack: train.AttackPrune}}
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := ts.mustComplete(c.req())
			if j.Result == nil || len(j.Result.Models) != 1 {
				t.Fatalf("result %+v", j.Result)
			}
			got := j.Result.Models[0]
			if source == "" {
				source = got.ID
			}
			if got.Recipe != c.want {
				t.Errorf("job result's recipe %q, want %q", got.Recipe, c.want)
			}
			var listed []shared.ModelInfo
			ts.call("GET", "/api/models", nil, &listed)
			found := false
			for _, m := range listed {
				if m.ID == got.ID {
					found = true
					if m.Recipe != c.want {
						t.Errorf("GET /api/models: recipe %q, want %q", m.Recipe, c.want)
					}
				}
			}
			if !found {
				t.Errorf("GET /api/models does not list %s", got.ID)
			}
			f, err := safetensors.ReadFile(filepath.Join(dir, "artifacts", got.ID+".safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			r, ok, err := train.RecipeOf(f.Metadata)
			switch {
			case err != nil:
				t.Errorf("the file's recipe: %v", err)
			case c.want == "" && ok:
				t.Errorf("the file records recipe %q, want none", r)
			case c.want != "" && (!ok || r.String() != c.want):
				t.Errorf("the file records recipe %q (%v), want %q", f.Metadata[train.MetaRecipe], ok, c.want)
			}
		})
	}
}
