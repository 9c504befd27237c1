// Package experiment reproduces the paper's studies at CPU scale: the
// conferrability of attacks (Table 1, Figures 4–5) and the fingerprint's
// correctness over training and testing surrogates and references
// (Table 2, with ROC AUC and the gap as functions of ε, τ and the training
// models). Each writes a report folder: markdown, PNG plots, the command.
package experiment

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// Role is what a model is to the source.
type Role string

const (
	Source    Role = "source"
	Surrogate Role = "surrogate" // distilled from the source's outputs (§2.2, §2.4)
	Reference Role = "reference" // trained on ground truth, independently
)

// Member is one model of a fleet. Training models live on the defender's
// half, testing models on the adversary's (§4.3).
type Member struct {
	Name      string
	Arch      string
	Role      Role
	Adversary bool // a testing model, trained on the adversary's half
	Epochs    int
	Seed      int64
	// Labels is what a surrogate learns from: HardLabels (Plan's choice),
	// the source's labels as a classification API returns them, or
	// SoftLabels, its prediction vectors (distillation at T = 1).
	Labels string
	// Recipe, when set, is how the member trains instead of Conferral's
	// own recipe (train.Defaults), with the member's Epochs and (for a
	// surrogate) Labels over the recipe's; WithRecipes samples them.
	Recipe *train.Recipe

	Model    *nn.Model
	TestAcc  float64
	FromDisk bool
}

// Side names the half a member was trained on.
func (m *Member) Side() string {
	if m.Adversary {
		return "testing"
	}
	return "training"
}

// What a surrogate is distilled from (Member.Labels).
const (
	SoftLabels = "soft"
	HardLabels = "hard"
)

// Fleet is the source and its surrogates and references.
type Fleet struct {
	Members []*Member
}

// Plan lists a fleet: a source of sourceArch and, for each architecture,
// perSide surrogates and references on each half.
func Plan(sourceArch string, archs []string, perSide, epochs int) []*Member {
	ms := []*Member{{Name: "source", Arch: sourceArch, Role: Source, Epochs: epochs + 1, Seed: 1}}
	seed := int64(100)
	for _, adv := range []bool{false, true} {
		for _, arch := range archs {
			for i := range perSide {
				for _, r := range []Role{Surrogate, Reference} {
					side := "train"
					if adv {
						side = "test"
					}
					e := epochs
					if arch == "mlp" {
						e = 2 * epochs // cheap, and slower to converge
					}
					seed++
					ms = append(ms, &Member{Name: fmt.Sprintf("%s-%s-%s-%d", side, r, arch, i), Arch: arch, Role: r, Adversary: adv, Epochs: e, Seed: seed, Labels: HardLabels})
				}
			}
		}
	}
	return ms
}

// WithRecipes gives every surrogate and reference of plan a training
// recipe of its own, drawn by train.SampleRecipes from seed (the same plan
// and seed give the same recipes), so that the fleet is diverse in how its
// models were trained and not only in their architectures. A member keeps
// its epochs (the plan's budget replaces the recipe's), a surrogate takes
// the recipe's labels (hard or soft), and a reference learns the ground
// truth. The source keeps Conferral's recipe. It returns plan.
func WithRecipes(plan []*Member, seed uint64) []*Member {
	n := 0
	for _, m := range plan {
		if m.Role != Source {
			n++
		}
	}
	rs := train.SampleRecipes(n, seed)
	for _, m := range plan {
		if m.Role == Source {
			continue
		}
		r := rs[0]
		rs = rs[1:]
		r.Epochs = m.Epochs
		if m.Role == Surrogate {
			m.Labels = r.Labels
		} else {
			r.Labels = train.LabelsHard
		}
		m.Recipe = &r
	}
	return plan
}

// recipe is the recipe m trains by: its own or Conferral's, with its
// epochs, and the labels it learns (the ground truth for all but
// surrogates).
func (m *Member) recipe() train.Recipe {
	r := train.Defaults(m.Epochs).Recipe()
	if m.Recipe != nil {
		r = *m.Recipe
		r.Epochs = m.Epochs
	}
	r.Labels = train.LabelsHard
	if m.Role == Surrogate && m.Labels == SoftLabels {
		r.Labels = train.LabelsSoft
	}
	return r
}

// cacheKey identifies the model m trains on the data tagged tag, from the
// source whose key is sourceKey (a surrogate is only valid for its
// source); a file recording another key is not m's.
func (m *Member) cacheKey(tag, sourceKey string) string {
	key := fmt.Sprintf("%s/%s/%d/%d/%s", m.Arch, m.Role, m.Epochs, m.Seed, tag)
	if m.Role == Surrogate {
		key += "/teacher=" + sourceKey
		if m.Labels == SoftLabels {
			key += "/labels=soft"
		}
	}
	if m.Recipe != nil {
		key += "/recipe=" + m.recipe().String()
	}
	return key
}

// Data are the experiment's datasets.
type Data struct {
	Defender, Adversary, Test *data.Dataset
	// Tag identifies the data (dataset, split seed, limit) in the fleet's
	// cache, so that models trained on other data are never reused.
	Tag string
}

// Build trains the fleet, or loads members already in dir (a model file is
// reused when its recorded architecture, role, epochs, seed and, for a
// member with a recipe of its own, recipe match). Every model it trains
// records its recipe (train.MetaRecipe).
func Build(ctx context.Context, dir string, plan []*Member, ds Data, dev torch.Device, progress shared.Reporter) (*Fleet, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f := &Fleet{}
	var source *nn.Model
	sourceKey := ""
	for _, m := range plan {
		path := filepath.Join(dir, m.Name+".safetensors")
		key := m.cacheKey(ds.Tag, sourceKey)
		if m.Role == Source {
			sourceKey = key
		}
		if model, meta, err := nn.Load(path, dev); err == nil && meta["fleet.key"] == key {
			m.Model, m.FromDisk = model, true
			fmt.Sscan(meta["test_accuracy"], &m.TestAcc)
		} else {
			if model != nil {
				model.Free()
			}
			d := ds.Defender
			if m.Adversary {
				d = ds.Adversary
			}
			torch.ManualSeed(uint64(m.Seed))
			model, err := nn.New(train.SpecFor(m.Arch, d), uint64(m.Seed), dev)
			if err != nil {
				f.Free()
				return nil, err
			}
			cfg := train.Defaults(m.Epochs)
			if m.Recipe != nil {
				cfg = m.recipe().Apply(cfg)
			}
			cfg.Seed, cfg.Test, cfg.Progress, cfg.Stage = m.Seed, ds.Test, progress, "train "+m.Name
			var res *train.Result
			switch {
			case m.Role == Surrogate && m.Recipe != nil:
				res, err = train.Retrain(ctx, source, model, d, cfg) // hard or soft labels, as cfg says
			case m.Role == Surrogate && m.Labels != SoftLabels:
				res, err = train.Retrain(ctx, source, model, d, cfg)
			case m.Role == Surrogate:
				var dv *train.Derivation
				dv, err = train.Jagielski(ctx, source, model, d, 1, cfg) // T′ = 1: the source's softmax as targets
				if dv != nil {
					res = dv.Train
				}
			default:
				res, err = train.Train(ctx, model, d, cfg)
			}
			if err != nil {
				model.Free()
				f.Free()
				return nil, err
			}
			m.Model, m.TestAcc = model, res.TestAccuracy
			cfg.SoftLabels = m.recipe().Labels == train.LabelsSoft // Jagielski's soft targets too
			meta := map[string]string{"fleet.key": key, "test_accuracy": fmt.Sprint(res.TestAccuracy), "fleet.role": string(m.Role),
				train.MetaRecipe: train.TrainedRecipe(cfg, model).String()}
			if err := model.Save(path, meta); err != nil {
				f.Free()
				return nil, err
			}
		}
		if m.Role == Source {
			source = m.Model
		}
		m.Model.SetTraining(false)
		f.Members = append(f.Members, m)
		progress.Report(shared.Event{Kind: shared.Log, Stage: "fleet", Message: fmt.Sprintf("%-28s %-9s test accuracy %.4f", m.Name, m.Arch, m.TestAcc)})
	}
	return f, nil
}

// Free releases every model.
func (f *Fleet) Free() {
	for _, m := range f.Members {
		if m.Model != nil {
			m.Model.Free()
		}
	}
}

// Source returns the source member.
func (f *Fleet) Source() *Member {
	for _, m := range f.Members {
		if m.Role == Source {
			return m
		}
	}
	return nil
}

// Select returns the members of a role on a side whose architecture is in
// archs (all architectures when archs is empty).
func (f *Fleet) Select(r Role, adversary bool, archs ...string) []*Member {
	var out []*Member
	for _, m := range f.Members {
		if m.Role != r || m.Adversary != adversary {
			continue
		}
		if len(archs) > 0 {
			ok := false
			for _, a := range archs {
				ok = ok || a == m.Arch
			}
			if !ok {
				continue
			}
		}
		out = append(out, m)
	}
	return out
}
