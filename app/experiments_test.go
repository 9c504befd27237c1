//go:build !wasm

package app

import (
	"strings"
	"testing"

	"github.com/conferral/conferral/shared"
)

func TestResolveRef(t *testing.T) {
	list := []shared.ReportInfo{
		{Name: "results:benchmark", Files: []string{"README.md"}},
		{Name: "results:benchmark/fp-1", Files: []string{"README.md", "histogram.png"}},
		{Name: "results:detect-evade", Files: []string{"README.md", "detectors/README.md"}},
		{Name: "results:evasion", Files: []string{"README.md"}},
		{Name: "results:levers", Files: []string{"README.md", "controls.md", "fleet8/fp.png"}},
		{Name: "robust", Files: []string{"README.md", "robustness.png"}},
		{Name: "evasion", Files: []string{"README.md"}},
	}
	by := func(name string) shared.ReportInfo {
		for _, r := range list {
			if r.Name == name {
				return r
			}
		}
		t.Fatalf("no report %s", name)
		return shared.ReportInfo{}
	}
	cases := []struct {
		report, file, p string
		want            string // report + " " + file, or "" for none
	}{
		{"robust", "README.md", "robustness.png", "robust robustness.png"},
		{"robust", "README.md", "./robustness.png#top", "robust robustness.png"},
		{"robust", "README.md", "missing.png", ""},
		{"robust", "README.md", "../evasion/README.md", "evasion README.md"},                       // the server's own reports reach each other
		{"results:detect-evade", "README.md", "../evasion/README.md", "results:evasion README.md"}, // and committed ones theirs, never the server's
		{"results:detect-evade", "README.md", "detectors/README.md", "results:detect-evade detectors/README.md"},
		{"results:detect-evade", "README.md", "serve-model-verify.txt", ""},
		{"results:detect-evade", "detectors/README.md", "../README.md", "results:detect-evade README.md"},
		{"results:benchmark", "README.md", "fp-1/README.md", "results:benchmark/fp-1 README.md"}, // the closest folder
		{"results:benchmark/fp-1", "README.md", "histogram.png", "results:benchmark/fp-1 histogram.png"},
		{"results:benchmark/fp-1", "README.md", "../README.md", "results:benchmark README.md"},
		{"results:benchmark", "README.md", "fp-2/README.md", ""},
		{"results:levers", "README.md", "controls.md", "results:levers controls.md"},
		{"results:levers", "README.md", "fleet8/fp.png", "results:levers fleet8/fp.png"},
		{"results:false-claims", "README.md", "../../protocol.md", ""}, // outside docs/results
		{"results:evasion", "README.md", "/api/reports/robust/README.md", ""},
		{"results:evasion", "README.md", "https://example.com/x.md", ""},
		{"results:evasion", "README.md", "..", ""},
	}
	for _, c := range cases {
		r := shared.ReportInfo{Name: c.report}
		if c.report != "results:false-claims" {
			r = by(c.report)
		}
		q, f, ok := resolveRef(list, r, c.file, c.p)
		got := ""
		if ok {
			got = q.Name + " " + f
		}
		if got != c.want {
			t.Errorf("%s in %s of %s: %q, want %q", c.p, c.file, c.report, got, c.want)
		}
	}
}

func TestStudyArgs(t *testing.T) {
	rob := newStudy("conferrability")
	rob.setKind("robustness")
	a, err := rob.args()
	if err != nil {
		t.Fatal(err)
	}
	if a.Study != "robustness" || a.Focus != 0.15 || a.Points != 100 || len(a.EpsSweep) != 0 || a.SourceArch != "mlp" || a.Epochs != 1 || a.Per != 1 {
		t.Errorf("robustness's first setting: %+v", a)
	}
	// A field the user changed survives a switch of study; one at its
	// first value takes the new study's.
	s := newStudy("conferrability")
	s.limit = 300
	s.setKind("robustness")
	s.setKind("fingerprint")
	if s.limit != 300 || s.points != 50 || s.epsSweep != "0.1,0.15" || s.kind != "fingerprint" {
		t.Errorf("after switching: %+v", s)
	}
	for _, c := range []struct {
		edit func(*study)
		says string
	}{
		{func(s *study) { s.kind = "robust" }, "unknown study"},
		{func(s *study) { s.focus = "0" }, "fingerprint's ε"},
		{func(s *study) { s.focus = "1.5" }, "fingerprint's ε"},
		{func(s *study) { s.focus = "x" }, "fingerprint's ε"},
		{func(s *study) { s.epochs = 0 }, "epochs"},
		{func(s *study) { s.points = 0 }, "start points"},
		{func(s *study) { s.limit = -1 }, "images"},
		{func(s *study) { s.archs = " , " }, "architecture"},
	} {
		s := newStudy("robustness")
		c.edit(&s)
		if _, err := s.args(); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%+v: %v, want an error saying %q", s, err, c.says)
		}
	}
	// The robustness study sweeps no ε: the form sends none even when its
	// hidden field holds one, and an empty fingerprint ε takes the server's.
	s = newStudy("robustness")
	s.epsSweep, s.focus = "0.1", ""
	if a, err := s.args(); err != nil || len(a.EpsSweep) != 0 || a.Focus != 0 {
		t.Errorf("%+v, %v", a, err)
	}
	// Full strength is the robustness study's alone.
	s = newStudy("robustness")
	s.full = true
	if a, err := s.args(); err != nil || !a.Full {
		t.Errorf("robustness at full strength: %+v, %v", a, err)
	}
	s.setKind("fingerprint")
	if a, err := s.args(); err != nil || a.Full {
		t.Errorf("a fingerprint study asks for full strength: %+v, %v", a, err)
	}
	c := newStudy("conferrability")
	c.focus = "2"
	if a, err := c.args(); err != nil || a.Focus != 0 || len(a.EpsSweep) != 2 {
		t.Errorf("conferrability %+v, %v: want the ε sweep and no focus", a, err)
	}
}
