//go:build !wasm

package app

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// TestModelsRecipe shows each stored model's recipe in its row of the
// models table, and nothing for a model that records none.
func TestModelsRecipe(t *testing.T) {
	const adamw = "adamw,lr=0.002,sched=constant,bs=32,epochs=1,wd=0.01,aug=none,ls=0.1,labels=hard,share=0.5"
	const nesterov = "sgd+nesterov,lr=0.05,mom=0.9,sched=cosine,bs=128,epochs=10,wd=0.0005,aug=crop+flip,labels=hard,share=1"
	now := time.Now()
	p := &models{loaded: true, list: []shared.ModelInfo{
		{ID: "a", Name: "trained", Role: shared.RoleSource, Recipe: adamw, Created: now},
		{ID: "b", Name: "derived", Role: shared.RoleDerived, Derivation: "ftal", Recipe: nesterov, Created: now.Add(-time.Minute)},
		{ID: "c", Name: "uploaded", Role: shared.RoleUploaded, Created: now.Add(-2 * time.Minute)},
	}}
	var table struct {
		Head []string `xml:"thead>tr>th"`
		Rows []struct {
			Model string   `xml:"data-model,attr"`
			Cells []string `xml:"td"`
		} `xml:"tbody>tr"`
	}
	html := ui.HTMLString(p.table())
	if err := xml.Unmarshal([]byte(html), &table); err != nil {
		t.Fatalf("%v in %s", err, html)
	}
	col := -1
	for i, h := range table.Head {
		if strings.TrimSpace(h) == "recipe" {
			col = i
		}
	}
	if col < 0 {
		t.Fatalf("no recipe column in %v", table.Head)
	}
	want := map[string]string{"a": adamw, "b": nesterov, "c": ""}
	if len(table.Rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(table.Rows), len(want))
	}
	for _, r := range table.Rows {
		if len(r.Cells) != len(table.Head) {
			t.Fatalf("model %s: %d cells under %d headings", r.Model, len(r.Cells), len(table.Head))
		}
		if got := strings.TrimSpace(r.Cells[col]); got != want[r.Model] {
			t.Errorf("model %s: recipe %q, want %q", r.Model, got, want[r.Model])
		}
	}
}

// TestTrainingFormRecipe sends the form's recipe with the training
// request, trimmed, and none when the field is empty.
func TestTrainingFormRecipe(t *testing.T) {
	for _, c := range []struct{ field, want string }{
		{"", ""},
		{"  adam,lr=0.001,aug=none ", "adam,lr=0.001,aug=none"},
	} {
		p := &models{arch: "mlp", split: "defender", epochs: 2, limit: 500, recipe: c.field}
		req := p.request()
		if req.Kind != shared.JobTrain || req.Train == nil || req.Train.Recipe != c.want || req.Train.Epochs != 2 || req.Train.Arch != "mlp" {
			t.Errorf("recipe field %q: request %+v", c.field, req.Train)
		}
	}
}
