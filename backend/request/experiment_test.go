package request

import (
	"reflect"
	"testing"

	"github.com/conferral/conferral/shared"
)

// TestExperiment: an experiment request's zeros take DefaultStudy, its
// fields replace the defaults, and the study does not share the request's
// slices.
func TestExperiment(t *testing.T) {
	if got := Experiment(shared.ExperimentArgs{Study: "fingerprint"}); !reflect.DeepEqual(got, DefaultStudy()) {
		t.Errorf("the zero request: %+v, want %+v", got, DefaultStudy())
	}
	a := shared.ExperimentArgs{SourceArch: "lenet", Archs: []string{"mlp"}, Per: 3, Epochs: 1, EpsSweep: []float64{0.1}, Taus: []float64{0}, Points: 20, Focus: 0.05}
	want := Study{SourceArch: "lenet", Archs: []string{"mlp"}, Per: 3, Epochs: 1, Eps: []float64{0.1}, Taus: []float64{0}, TauSurrs: []float64{0, 1}, Points: 20, Focus: 0.05}
	got := Experiment(a)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%+v, want %+v", got, want)
	}
	got.Archs[0], got.Eps[0] = "cnn", 1
	if a.Archs[0] != "mlp" || a.EpsSweep[0] != 0.1 {
		t.Error("the study shares the request's slices")
	}
}
