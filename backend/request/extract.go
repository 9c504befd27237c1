package request

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/shared"
)

// Extract is the extraction a request asks for: fingerprint.DefaultConfig
// with the request's settings over it. Its start points (Start) are the
// caller's to load, by fingerprint.StartPoints; Extract only checks the
// name.
func Extract(a shared.ExtractArgs) (fingerprint.Config, error) {
	if err := checkExtract(a); err != nil {
		return fingerprint.Config{}, err
	}
	c := fingerprint.DefaultConfig()
	if a.Eps > 0 {
		c.CBIM.Eps = a.Eps
	}
	if a.Alpha > 0 {
		c.CBIM.Alpha = a.Alpha
	}
	if a.Steps > 0 {
		c.CBIM.Steps = a.Steps
	}
	if a.Dropout != nil { // zero means no dropout
		c.CBIM.Dropout = *a.Dropout
	}
	if a.Loss != "" {
		c.CBIM.Loss = attack.Loss(a.Loss)
	}
	c.CBIM.Best, c.CBIM.Shift, c.CBIM.Noise, c.Natural = a.BestIterate, a.Shift, a.Noise, a.Natural
	if a.Tau != nil { // zero keeps every example
		c.Tau = *a.Tau
	}
	c.TauSurr = a.TauSurr
	if a.Candidates > 0 {
		c.Candidates = a.Candidates
	}
	if a.Batch > 0 {
		c.Batch = a.Batch
	}
	if a.Seed != 0 {
		c.Seed = a.Seed
	}
	return c, nil
}

// checkExtract refuses a request whose settings are out of range, or a
// natural one that sets C-BIM's.
func checkExtract(a shared.ExtractArgs) error {
	if set := CBIMOnly(a); a.Natural && len(set) > 0 {
		return fmt.Errorf("natural: C-BIM's settings do not apply (a natural fingerprint runs no C-BIM: its examples are the source's own mistakes, unperturbed); leave out %s", strings.Join(set, ", "))
	}
	if !in01(a.Eps) || (a.Tau != nil && !in01(*a.Tau)) || !in01(a.TauSurr) || (a.Dropout != nil && !(*a.Dropout >= 0 && *a.Dropout < 1)) {
		return errors.New("eps, tau and tau_surr must lie in [0,1] and dropout in [0,1)")
	}
	if !(a.Alpha >= 0) || math.IsInf(a.Alpha, 1) || a.Steps < 0 {
		// Either would be taken for "unset" and replaced by the default.
		return fmt.Errorf("alpha %g, steps %d: want a step size and a step count of 0 (the default) or more", a.Alpha, a.Steps)
	}
	if a.Candidates < 0 || a.Batch < 0 {
		return fmt.Errorf("candidates %d, batch %d: want 0 (the default) or more", a.Candidates, a.Batch)
	}
	if _, err := attack.ParseLoss(a.Loss); err != nil {
		return err
	}
	if err := attack.CheckDiversity(a.Shift, a.Noise); err != nil {
		return err
	}
	if _, err := fingerprint.StartPoints(a.Start, nil, nil); err != nil {
		return err
	}
	return CheckTwins(a)
}

// CheckTwins refuses a twin that takes another part in the extraction: the
// source itself, a training surrogate or reference, a calibration model
// (which must be independent of the fingerprint), or a twin given twice.
func CheckTwins(a shared.ExtractArgs) error {
	for i, id := range a.Twins {
		role := ""
		switch {
		case id == "":
			return errors.New("twins: a model ID is required")
		case id == a.Source:
			role = "the source"
		case slices.Contains(a.Surrogates, id):
			role = "a surrogate"
		case slices.Contains(a.References, id):
			role = "a reference"
		case slices.Contains(a.Calibration, id):
			role = "a calibration model"
		case slices.Contains(a.Twins[:i], id):
			role = "a twin already"
		}
		if role != "" {
			return fmt.Errorf("twin %s is also %s: a twin is an independent model of the source's architecture and recipe, in no other role of the extraction", id, role)
		}
	}
	return nil
}

// cbimSetting is a setting that only C-BIM uses: its name as the API
// spells it, and whether a request sets it.
type cbimSetting struct {
	name string
	set  func(a shared.ExtractArgs) bool
}

// cbimSettings are the settings of a request that only C-BIM uses, in the
// order the API documents them: the one list of them.
func cbimSettings() []cbimSetting {
	return []cbimSetting{
		{"eps", func(a shared.ExtractArgs) bool { return a.Eps != 0 }},
		{"alpha", func(a shared.ExtractArgs) bool { return a.Alpha != 0 }},
		{"steps", func(a shared.ExtractArgs) bool { return a.Steps != 0 }},
		{"dropout", func(a shared.ExtractArgs) bool { return a.Dropout != nil }},
		{"loss", func(a shared.ExtractArgs) bool { return a.Loss != "" }},
		{"best_iterate", func(a shared.ExtractArgs) bool { return a.BestIterate }},
		{"shift", func(a shared.ExtractArgs) bool { return a.Shift != 0 }},
		{"noise", func(a shared.ExtractArgs) bool { return a.Noise != 0 }},
	}
}

// CBIMOnlyNames names (as the API spells them) the settings that only
// C-BIM uses: a natural extraction, which runs no C-BIM, refuses them
// rather than ignore them. The CLI's flags are these names with '-' for
// '_'.
func CBIMOnlyNames() []string {
	var names []string
	for _, s := range cbimSettings() {
		names = append(names, s.name)
	}
	return names
}

// CBIMOnly names those of C-BIM's settings that a sets.
func CBIMOnly(a shared.ExtractArgs) []string {
	var set []string
	for _, s := range cbimSettings() {
		if s.set(a) {
			set = append(set, s.name)
		}
	}
	return set
}

// in01 says whether v lies in [0,1] (NaN does not).
func in01(v float64) bool { return v >= 0 && v <= 1 }
