package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/request"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// check validates a request before it is queued, so that a job fails only
// for reasons the request could not show.
func (s *Server) check(ctx context.Context, req *shared.JobRequest) error {
	given := 0
	for _, p := range []bool{req.Train != nil, req.Derive != nil, req.Extract != nil, req.Verify != nil, req.Experiment != nil} {
		if p {
			given++
		}
	}
	if given != 1 {
		return badInput("a job request carries the arguments of exactly one kind, this one has %d", given)
	}
	model := func(what, id string) error {
		_, err := s.modelOf(ctx, what, id, "")
		return err
	}
	checkData := func(d shared.DataArgs) error {
		if d.Dataset != "" && data.CanonicalName(d.Dataset) == "" {
			return badInput("dataset %q: want one of %s", d.Dataset, strings.Join(data.Names(), ", "))
		}
		if d.Split != "" && d.Split != "defender" && d.Split != "adversary" && d.Split != "all" {
			return badInput("split %q: want defender, adversary or all", d.Split)
		}
		if d.Limit < 0 {
			return badInput("limit %d: want 0 (all) or more", d.Limit)
		}
		return nil
	}
	epochs := func(n int) error {
		if n < 0 || n > request.MaxEpochs {
			return badInput("epochs %d: want 0 to %d", n, request.MaxEpochs)
		}
		return nil
	}
	switch req.Kind {
	case shared.JobTrain:
		a := req.Train
		if a == nil {
			return badInput("a train job needs train arguments")
		}
		if a.Arch != "" && !slices.Contains(nn.Architectures(), a.Arch) {
			return badInput("arch %q: want one of %s", a.Arch, strings.Join(nn.Architectures(), ", "))
		}
		if a.Teacher != "" {
			if _, err := s.modelOf(ctx, "teacher", a.Teacher, cmp.Or(a.Dataset, "fashion-mnist")); err != nil {
				return err
			}
		}
		if _, err := request.Train(*a); err != nil {
			return badInput("%v", err)
		}
		return checkData(a.DataArgs)
	case shared.JobDerive:
		a := req.Derive
		if a == nil {
			return badInput("a derive job needs derive arguments")
		}
		if _, err := request.Derive(*a); err != nil {
			return badInput("%v", err)
		}
		if a.Arch != "" && !slices.Contains(nn.Architectures(), a.Arch) {
			return badInput("arch %q: want one of %s", a.Arch, strings.Join(nn.Architectures(), ", "))
		}
		if a.Transfer != "" && data.CanonicalName(a.Transfer) == "" {
			return badInput("transfer dataset %q: want one of %s", a.Transfer, strings.Join(data.Names(), ", "))
		}
		if err := model("source", a.Source); err != nil {
			return err
		}
		return checkData(a.DataArgs)
	case shared.JobExtract:
		a := req.Extract
		if a == nil {
			return badInput("an extract job needs extract arguments")
		}
		if _, err := request.Extract(*a); err != nil {
			return badInput("%v", err)
		}
		if err := checkExtractModels(a); err != nil {
			return err
		}
		src, err := s.modelOf(ctx, "source", a.Source, a.Dataset)
		if err != nil {
			return err
		}
		for _, id := range append(slices.Clone(a.Surrogates), a.References...) {
			if _, err := s.modelOf(ctx, "training model", id, src.Dataset); err != nil {
				return err
			}
		}
		for _, id := range a.Twins { // request.Extract refused one in another role
			m, err := s.modelOf(ctx, "twin", id, src.Dataset)
			if err != nil {
				return err
			}
			// A twin is independent of the source: one made from it (a
			// surrogate, a derived model) would drop the keys that transfer.
			if m.Parent == a.Source {
				return badInput("twin %s was made from the source (%s): a twin is trained independently, as the source was", m.Name, cmp.Or(m.Role, "derived"))
			}
		}
		if a.Train != nil && a.Train.Twins > 0 && src.Recipe == "" {
			return badInput("train: twins: the source %s records no training recipe to train its twins with (uploaded, pruned or quantized, or trained before recipes were recorded): give stored twins instead", src.Name)
		}
		if len(a.Calibration) == 1 {
			return badInput("calibration needs at least two independent models (ten or more advised)")
		}
		for _, id := range a.Calibration {
			if id == a.Source || slices.Contains(a.Surrogates, id) || slices.Contains(a.References, id) {
				return badInput("calibration model %s also takes part in the extraction: calibration needs independent models that do not", id)
			}
			if _, err := s.modelOf(ctx, "calibration model", id, src.Dataset); err != nil {
				return err
			}
		}
		return checkData(a.DataArgs)
	case shared.JobVerify:
		if req.Verify == nil {
			return badInput("a verify job needs verify arguments")
		}
		return s.checkVerify(ctx, req.Verify)
	case shared.JobExperiment:
		a := req.Experiment
		if a == nil {
			return badInput("an experiment job needs experiment arguments")
		}
		if a.Study != "conferrability" && a.Study != "fingerprint" && a.Study != "robustness" {
			return badInput("study %q: want conferrability, fingerprint or robustness", a.Study)
		}
		if err := checkExperimentRanges(a); err != nil { // ranges.go
			return err
		}
		if err := s.checkExperimentFanout(a); err != nil { // fanout.go
			return err
		}
		if a.Name != "" && !nameRE.MatchString(a.Name) {
			return badInput("report name %q: letters, digits, '.', '_' and '-' only", a.Name)
		}
		for _, arch := range append(slices.Clone(a.Archs), a.SourceArch) {
			if arch != "" && !slices.Contains(nn.Architectures(), arch) {
				return badInput("arch %q: want one of %s", arch, strings.Join(nn.Architectures(), ", "))
			}
		}
		if err := epochs(a.Epochs); err != nil {
			return err
		}
		if err := checkData(shared.DataArgs{Dataset: a.Dataset, Limit: a.Limit}); err != nil {
			return err
		}
		if a.Study == "robustness" {
			// runRobustness sweeps neither and needs Knockoff's default
			// transfer set: refuse now rather than ignore the fields or fail
			// after the fleet has trained.
			if len(a.EpsSweep) > 0 || len(a.Taus) > 0 {
				return badInput("eps_sweep and taus: the robustness study sweeps neither (focus sets the fingerprint's ε)")
			}
			if _, err := experiment.DefaultTransfer(cmp.Or(a.Dataset, "fashion-mnist")); err != nil {
				return badInput("robustness: %v", err)
			}
		} else if a.Full {
			return badInput("full: only the robustness study has a full strength (study %q)", a.Study)
		}
		return nil
	}
	return badInput("job kind %q: want train, derive, extract, verify or experiment", req.Kind)
}

// modelOf returns a stored model's record for a request, refusing an
// unknown ID or, when dataset is given, a model of another dataset.
func (s *Server) modelOf(ctx context.Context, what, id, dataset string) (shared.ModelInfo, error) {
	if id == "" {
		return shared.ModelInfo{}, badInput("%s: a model ID is required", what)
	}
	m, _, err := s.store.Model(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return m, badInput("%s: no stored model %q", what, id)
	}
	if err != nil {
		return m, err
	}
	if dataset != "" && data.CanonicalName(dataset) != data.CanonicalName(m.Dataset) {
		return m, badInput("%s %s was trained on %s, not %s", what, m.Name, m.Dataset, dataset)
	}
	return m, nil
}

// run does a job's work.
func (s *Server) run(ctx context.Context, j shared.Job, rep shared.Reporter) (*shared.JobResult, error) {
	a := j.Args
	switch j.Kind {
	case shared.JobTrain:
		return s.runTrain(ctx, j, *a.Train, rep)
	case shared.JobDerive:
		return s.runDerive(ctx, j, *a.Derive, rep)
	case shared.JobExtract:
		return s.runExtract(ctx, j, *a.Extract, rep)
	case shared.JobVerify:
		return s.runVerify(ctx, j, *a.Verify, rep)
	case shared.JobExperiment:
		return s.runExperiment(ctx, j, *a.Experiment, rep)
	}
	return nil, fmt.Errorf("job kind %q is unknown", j.Kind)
}

// loadData returns a request's training split and the test set.
func (s *Server) loadData(a shared.DataArgs, defSplit string) (trainSet, testSet *data.Dataset, err error) {
	name := cmp.Or(a.Dataset, "fashion-mnist")
	full, err := data.Load(name, s.cfg.DataDir, true)
	if err != nil {
		return nil, nil, err
	}
	testSet, err = data.Load(name, s.cfg.DataDir, false)
	if err != nil {
		return nil, nil, err
	}
	seed := a.SplitSeed
	if seed == 0 {
		seed = 1
	}
	switch cmp.Or(a.Split, defSplit) {
	case "all":
		trainSet = full
	case "defender":
		trainSet, _ = data.Split(full, seed)
	case "adversary":
		_, trainSet = data.Split(full, seed)
	}
	return trainSet.First(a.Limit), testSet.First(a.Limit), nil
}

// loadModel loads a stored model onto the server's device.
func (s *Server) loadModel(ctx context.Context, id string) (*nn.Model, shared.ModelInfo, error) {
	info, path, err := s.store.Model(ctx, id)
	if err != nil {
		return nil, info, err
	}
	m, _, err := nn.Load(path, s.device)
	if err != nil {
		return nil, info, fmt.Errorf("loading model %s (%s): %w", info.Name, id, err)
	}
	return m, info, nil
}

// saver is a model that writes itself to a file.
type saver interface {
	Save(path string, extra map[string]string) error
}

// keepModel writes m as an artifact and records it.
func (s *Server) keepModel(ctx context.Context, m saver, meta map[string]string, info shared.ModelInfo) (shared.ModelInfo, error) {
	tmp, err := s.art.temp(".safetensors")
	if err != nil {
		return info, err
	}
	if err := m.Save(tmp, meta); err != nil {
		os.Remove(tmp)
		return info, fmt.Errorf("saving model %s: %w", info.Name, err)
	}
	sum, path, err := s.art.adopt(tmp, ".safetensors")
	if err != nil {
		return info, err
	}
	info.ID, info.SHA256, info.Created = sum, sum, time.Now().UTC()
	if info.Name == "" {
		info.Name = fmt.Sprintf("%s-%s-%s", info.Role, info.Arch, sum[:8])
	}
	if err := s.store.PutModel(ctx, info, path); err != nil {
		return info, err
	}
	// The same bytes may have been stored before: report the record kept.
	kept, _, err := s.store.Model(ctx, sum)
	return kept, err
}

func (s *Server) runTrain(ctx context.Context, j shared.Job, a shared.TrainArgs, rep shared.Reporter) (*shared.JobResult, error) {
	trainSet, testSet, err := s.loadData(a.DataArgs, "defender")
	if err != nil {
		return nil, err
	}
	arch := cmp.Or(a.Arch, "cnn")
	cfg, err := request.Train(a)
	if err != nil {
		return nil, badInput("%v", err)
	}
	torch.ManualSeed(uint64(cfg.Seed))
	m, err := nn.New(train.SpecFor(arch, trainSet), uint64(cfg.Seed), s.device)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	cfg.Test, cfg.Progress, cfg.Stage = testSet, rep, "train "+arch
	role := cmp.Or(a.Role, shared.RoleSource)
	meta := map[string]string{"train.split": cmp.Or(a.Split, "defender"), "train.epochs": fmt.Sprint(cfg.Epochs),
		"train.seed": fmt.Sprint(cfg.Seed), "train.optimizer": cfg.Optimizer, "train.created": time.Now().UTC().Format(time.RFC3339),
		"server.job": j.ID}
	var res *train.Result
	if a.Teacher != "" {
		if a.Role == "" {
			role = shared.RoleSurrogate
		}
		src, _, err := s.loadModel(ctx, a.Teacher)
		if err != nil {
			return nil, err
		}
		defer src.Free()
		meta["train.teacher_sha256"], meta["train.derivation"] = a.Teacher, "retraining"
		cfg.Stage = "retrain " + arch
		res, err = train.Retrain(ctx, src, m, trainSet, cfg)
		if err != nil {
			return nil, err
		}
	} else if res, err = train.Train(ctx, m, trainSet, cfg); err != nil {
		return nil, err
	}
	meta["test_accuracy"] = fmt.Sprintf("%.4f", res.TestAccuracy)
	rec := train.TrainedRecipe(cfg, m).String()
	meta[train.MetaRecipe] = rec
	info := shared.ModelInfo{Name: a.Name, Arch: arch, Role: role, Dataset: trainSet.Name, TestAcc: res.TestAccuracy,
		Parent: a.Teacher, Job: j.ID, Params: m.NumParams(), Recipe: rec}
	if a.Teacher != "" {
		info.Derivation = "retraining"
	}
	info, err = s.keepModel(ctx, m, meta, info)
	if err != nil {
		return nil, err
	}
	return &shared.JobResult{Models: []shared.ModelInfo{info},
		Message: fmt.Sprintf("%s: %s on %s, test accuracy %.4f after %d epochs (%.0f s)", info.Name, arch, trainSet.Name, res.TestAccuracy, len(res.Epochs), res.Seconds)}, nil
}

func (s *Server) runDerive(ctx context.Context, j shared.Job, a shared.DeriveArgs, rep shared.Reporter) (*shared.JobResult, error) {
	src, srcInfo, err := s.loadModel(ctx, a.Source)
	if err != nil {
		return nil, err
	}
	defer src.Free()
	if a.Dataset == "" {
		a.Dataset = src.Spec.Dataset
	}
	trainSet, testSet, err := s.loadData(a.DataArgs, "adversary")
	if err != nil {
		return nil, err
	}
	if trainSet.C != int(src.Spec.C) || trainSet.H != int(src.Spec.H) || trainSet.W != int(src.Spec.W) || trainSet.NumClasses() != len(src.Spec.Classes) {
		return nil, fmt.Errorf("the source classifies %dx%dx%d images into %d classes, %s has %dx%dx%d images of %d classes",
			src.Spec.C, src.Spec.H, src.Spec.W, len(src.Spec.Classes), trainSet.Name, trainSet.C, trainSet.H, trainSet.W, trainSet.NumClasses())
	}
	d, err := request.Derive(a)
	if err != nil {
		return nil, badInput("%v", err)
	}
	trainSet = trainSet.First(d.Examples)
	cfg, o := d.Config, d.Options
	if a.Attack == train.AttackKnockoff {
		t, err := s.transferSet(a.Transfer, src.Spec, trainSet.Classes)
		if err != nil {
			return nil, err
		}
		o.Transfer = t.First(max(o.TransferSize, trainSet.Len()))
	}
	cfg.Test, cfg.Progress, cfg.Stage = testSet, rep, "derive "+a.Attack
	m, der, err := train.Derive(ctx, a.Attack, src, trainSet, o, cfg)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	arch := src.Spec.Arch
	switch m := m.(type) {
	case *nn.Model:
		arch = m.Spec.Arch
	case *train.Ensemble:
		arch = fmt.Sprintf("ensemble of %d", len(m.Members))
	}
	meta := map[string]string{"derive.attack": a.Attack, "derive.source_sha256": a.Source, "derive.queries": fmt.Sprint(der.Queries),
		"derive.examples": fmt.Sprint(der.Examples), "train.created": time.Now().UTC().Format(time.RFC3339),
		"test_accuracy": fmt.Sprintf("%.4f", der.TestAccuracy), "server.job": j.ID}
	info := shared.ModelInfo{Name: a.Name, Arch: arch, Role: shared.RoleDerived, Dataset: srcInfo.Dataset, TestAcc: der.TestAccuracy,
		Derivation: a.Attack, Parent: a.Source, Job: j.ID}
	if nm, ok := m.(*nn.Model); ok {
		info.Params = nm.NumParams()
	}
	if d.Attack.Trains {
		r := cfg.Recipe()
		if nm, ok := m.(*nn.Model); ok {
			r = train.TrainedRecipe(cfg, nm)
		}
		info.Recipe = r.String()
		meta[train.MetaRecipe] = info.Recipe
	}
	info, err = s.keepModel(ctx, m, meta, info)
	if err != nil {
		return nil, err
	}
	return &shared.JobResult{Models: []shared.ModelInfo{info},
		Message: fmt.Sprintf("%s: %s of %s, %d queries, test accuracy %.4f (%.0f s)", info.Name, a.Attack, srcInfo.Name, der.Queries, der.TestAccuracy, der.Seconds)}, nil
}

func (s *Server) runExtract(ctx context.Context, j shared.Job, a shared.ExtractArgs, rep shared.Reporter) (*shared.JobResult, error) {
	var loaded []*nn.Model
	defer func() {
		for _, m := range loaded {
			m.Free()
		}
	}()
	load := func(ids []string) ([]fingerprint.Model, error) {
		var out []fingerprint.Model
		for _, id := range ids {
			m, _, err := s.loadModel(ctx, id)
			if err != nil {
				return nil, err
			}
			loaded = append(loaded, m)
			out = append(out, m)
		}
		return out, nil
	}
	src, srcInfo, err := s.loadModel(ctx, a.Source)
	if err != nil {
		return nil, err
	}
	loaded = append(loaded, src)
	surr, err := load(a.Surrogates)
	if err != nil {
		return nil, err
	}
	refs, err := load(a.References)
	if err != nil {
		return nil, err
	}
	twins, err := load(a.Twins)
	if err != nil {
		return nil, err
	}
	if a.Dataset == "" {
		a.Dataset = src.Spec.Dataset
	}
	d, test, err := s.loadData(a.DataArgs, "defender")
	if err != nil {
		return nil, err
	}
	if d, err = fingerprint.StartPoints(a.Start, d, test); err != nil { // test by default: inputs no training model was fit on
		return nil, err
	}
	cfg, err := request.Extract(a)
	if err != nil {
		return nil, err
	}
	cfg.Progress = rep
	tm := fingerprint.Training{Source: src, Surrogates: surr, References: refs, Twins: twins,
		SurrogateIDs: a.Surrogates, ReferenceIDs: a.References, TwinIDs: a.Twins, SourceID: a.Source, SourceArch: src.Spec.Arch}
	fp, err := fingerprint.Extract(ctx, tm, d, cfg)
	if err != nil {
		return nil, err
	}
	info, err := s.keepFingerprint(ctx, fp, a.Name, j.ID)
	if err != nil {
		return nil, err
	}
	if len(a.Calibration) > 0 {
		if err := s.calibrate(ctx, fp, info.ID, a.Calibration, rep); err != nil {
			return nil, err
		}
	}
	rep.Report(shared.Event{Kind: shared.Crafted, Stage: "extract", Fingerprint: &info,
		Message: fmt.Sprintf("%d fingerprints of %s from %d start points", info.Count, srcInfo.Name, info.Candidates)})
	return &shared.JobResult{Fingerprint: &info,
		Message: fmt.Sprintf("%d fingerprints from %d start points (%s, τ = %g, τ_S = %g), commitment %s", fp.N, fp.Meta.Candidates, fp.Meta.Method(), cfg.Tau, cfg.TauSurr, info.Commitment)}, nil
}

// calibrate measures how often the stored independent models agree with
// fp and keeps the calibration beside the fingerprint's file, where
// verification finds it.
func (s *Server) calibrate(ctx context.Context, fp *fingerprint.Fingerprint, id string, models []string, rep shared.Reporter) error {
	var ms []fingerprint.IndependentModel
	for _, mid := range models {
		m, info, err := s.loadModel(ctx, mid)
		if err != nil {
			return err
		}
		defer m.Free()
		ms = append(ms, fingerprint.IndependentModel{Suspect: &suspect.Local{Model: m, Name: info.Name}, Arch: info.Arch, SHA256: mid})
	}
	c, err := fingerprint.Calibrate(ctx, fp, ms, fingerprint.DefaultFPR)
	if err != nil {
		return err
	}
	_, path, err := s.store.Fingerprint(ctx, id)
	if err != nil {
		return err
	}
	if err := c.Save(fingerprint.CalibrationPath(path)); err != nil {
		return err
	}
	rep.Report(shared.Event{Kind: shared.Log, Stage: "calibrate", Message: fmt.Sprintf("calibrated by %d independent models (%s): agreement %.2f ± %.2f, accusing from %.2f at a false-positive rate of %g",
		len(c.Models), strings.Join(c.Architectures(), ", "), c.Fit.Mean(), c.Fit.SD(), c.Summary.Accuracy, c.FPR)})
	return nil
}

// attackOf is how a fingerprint's examples were made, as its metadata
// says (a file written before it said was C-BIM's).
func attackOf(m fingerprint.Meta) string {
	if m.Attack == "" {
		return shared.AttackCBIM
	}
	return m.Attack
}

// keepFingerprint writes fp as an artifact and records it.
func (s *Server) keepFingerprint(ctx context.Context, fp *fingerprint.Fingerprint, name, job string) (shared.FingerprintInfo, error) {
	var info shared.FingerprintInfo
	tmp, err := s.art.temp(".safetensors")
	if err != nil {
		return info, err
	}
	if err := fp.Save(tmp); err != nil {
		os.Remove(tmp)
		return info, err
	}
	sum, path, err := s.art.adopt(tmp, ".safetensors")
	if err != nil {
		return info, err
	}
	com, err := fp.Commitment()
	if err != nil {
		return info, err
	}
	m := fp.Meta
	info = shared.FingerprintInfo{ID: sum, Name: name, Source: m.SourceSHA256, SourceArch: m.SourceArch, Dataset: m.Dataset,
		Attack: attackOf(m), Eps: m.Eps, Tau: m.Tau, TauSurr: m.TauSurr, Loss: m.Loss, Count: fp.N, Candidates: m.Candidates, ReferenceRate: m.ReferenceRate,
		Commitment: com, Job: job, Created: time.Now().UTC()}
	if info.Name == "" {
		info.Name = fmt.Sprintf("fp-%s-eps%g-%s", m.SourceArch, m.Eps, sum[:8])
		if info.Natural() {
			info.Name = fmt.Sprintf("fp-%s-natural-%s", m.SourceArch, sum[:8])
		}
	}
	if err := s.store.PutFingerprint(ctx, info, path); err != nil {
		return info, err
	}
	kept, _, err := s.store.Fingerprint(ctx, sum)
	return kept, err
}

func (s *Server) runVerify(ctx context.Context, j shared.Job, a shared.VerifyArgs, rep shared.Reporter) (*shared.JobResult, error) {
	fpInfo, fp, err := s.openFingerprint(ctx, a.Fingerprint)
	if err != nil {
		return nil, err
	}
	sus, release, err := s.openSuspect(ctx, a, fp.Meta.Classes)
	if err != nil {
		return nil, err
	}
	defer release()
	rule, err := s.verifyRule(ctx, a, fp)
	if err != nil {
		return nil, err
	}
	rep.Report(shared.Event{Kind: shared.Log, Stage: "verify", Message: fmt.Sprintf("querying %s with %d fingerprints of %s", sus, fp.N, fpInfo.Name)})
	var v *fingerprint.Verdict
	if rule.Sequential != nil {
		// The sequential test reports each batch of answers itself.
		v, err = fingerprint.VerifyWatched(ctx, sus, fp, rule, rep)
	} else {
		// Progress hands the suspect 64 images at a time, a remote
		// endpoint's own request size, so watching costs no extra requests.
		watched := &suspect.Progress{Suspect: sus, Batch: 64, Report: func(done, total int) {
			rep.Report(shared.Event{Kind: shared.Progress, Stage: "verify", Step: int64(done), Total: int64(total), Message: fmt.Sprintf("%d of %d queries answered", done, total)})
		}}
		v, err = fingerprint.Verify(ctx, watched, fp, rule)
	}
	if err != nil {
		return nil, err
	}
	out := verdict(v, fp, a.Fingerprint)
	rep.Report(shared.Event{Kind: shared.Verdicts, Stage: "verify", Verdict: &out, Message: out.Explanation})
	return &shared.JobResult{Verdict: &out, Message: out.Explanation}, nil
}

// verifyRule is the decision rule of a verification: θ, and the
// calibration stored beside the fingerprint when there is one.
func (s *Server) verifyRule(ctx context.Context, a shared.VerifyArgs, fp *fingerprint.Fingerprint) (fingerprint.Rule, error) {
	r, err := request.Verify(a)
	if err != nil {
		return r, badInput("verify: %v", err)
	}
	_, path, err := s.store.Fingerprint(ctx, a.Fingerprint)
	if err != nil {
		return r, err
	}
	if cp := fingerprint.CalibrationPath(path); fileExists(cp) {
		if r.Calibration, err = fingerprint.LoadCalibration(cp, fp); err != nil {
			return r, fmt.Errorf("verify: the fingerprint's calibration: %w", err)
		}
	}
	if err := r.Check(fp); err != nil {
		return r, badInput("verify: %v", err)
	}
	return r, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// verdict converts the library's verdict to its wire form.
func verdict(v *fingerprint.Verdict, fp *fingerprint.Fingerprint, id string) shared.Verdict {
	out := shared.Verdict{Suspect: v.Suspect, Fingerprint: id, Commitment: v.Commitment, Signer: v.Signer, Rule: v.Rule, N: v.Fingerprints, Matches: v.Agree,
		Accuracy: v.Accuracy, Interval: v.Interval, Confidence: v.Confidence, Outcome: v.Outcome, Surrogate: v.Surrogate,
		Verdict: map[string]string{fingerprint.Derived: "derived", fingerprint.Independent: "independent", fingerprint.Inconclusive: "inconclusive"}[v.Outcome],
		Theta:   v.Theta, Threshold: v.Threshold, Calibrated: v.Calibrated, PValue: v.PValue, EmpiricalP: v.EmpiricalP, Null: v.Null,
		Sequential: v.Sequential, Evasion: v.Evasion, Explanation: v.Explain(), Queries: v.Queries}
	for j, i := range v.Order {
		out.Items = append(out.Items, shared.VerdictItem{Index: i, Label: v.Labels[j], Key: fp.Keys[i], Agree: v.Matches[j]})
	}
	return out
}

// transferSet loads Knockoff's transfer set, a dataset by name (MNIST for
// a Fashion-MNIST source when name is empty), for the source src whose
// classes are classes.
func (s *Server) transferSet(name string, src nn.Spec, classes []string) (*data.Dataset, error) {
	if name == "" {
		var err error
		if name, err = experiment.DefaultTransfer(src.Dataset); err != nil {
			return nil, err
		}
	}
	// DataDir holds the source's dataset: another one (MNIST beside
	// Fashion-MNIST, whose IDX files have the same names) comes from where
	// packages put it, not from there.
	dir := s.cfg.DataDir
	if data.CanonicalName(name) != data.CanonicalName(src.Dataset) {
		dir = ""
	}
	t, err := data.Load(name, dir, true)
	if err != nil {
		return nil, fmt.Errorf("knockoff: %w", err)
	}
	return experiment.AsTransfer(t, src, classes)
}

func (s *Server) runExperiment(ctx context.Context, j shared.Job, a shared.ExperimentArgs, rep shared.Reporter) (*shared.JobResult, error) {
	if a.Member != "" {
		return s.runMember(ctx, a, rep) // fanout.go
	}
	study := request.Experiment(a)
	ds, err := s.experimentData(a)
	if err != nil {
		return nil, err
	}
	fleet, err := experiment.Build(ctx, s.modelsDir(), experimentPlan(a), ds, s.device, rep)
	if err != nil {
		return nil, err
	}
	defer fleet.Free()
	name := a.Name
	if name == "" {
		name = fmt.Sprintf("%s-job%s", a.Study, j.ID)
	}
	dir := report.Dir(filepath.Join(s.reports, name))
	cfg := fingerprint.DefaultConfig()
	command := fmt.Sprintf("conferral serve: experiment job %s", j.ID)
	switch a.Study {
	case "conferrability":
		st := &experiment.ConferrabilityStudy{Eps: study.Eps, Focus: study.Focus, Points: study.Points, Batch: cfg.Batch, CBIM: cfg.CBIM, Command: command}
		if _, err := st.Run(ctx, fleet, ds.Test, dir, rep); err != nil {
			return nil, err
		}
	case "fingerprint":
		if a.Points > 0 {
			cfg.Candidates = a.Points
		}
		st := &experiment.FingerprintStudy{
			Main: experiment.Setting{Name: "main", Eps: cfg.CBIM.Eps, Loss: cfg.CBIM.Loss, Best: cfg.CBIM.Best},
			Eps:  study.Eps, Taus: study.Taus, TauSurrs: study.TauSurrs, Losses: attack.Losses(),
			Extract: cfg, Theta: fingerprint.DefaultThreshold, Command: command,
		}
		if _, err := st.Run(ctx, fleet, ds, dir, rep); err != nil {
			return nil, err
		}
	case "robustness":
		if err := s.runRobustness(ctx, a, fleet, ds, dir, command, rep); err != nil {
			return nil, err
		}
	}
	info, err := s.keepReport(ctx, name, a.Study, j.ID)
	if err != nil {
		return nil, err
	}
	return &shared.JobResult{Report: &info, Message: fmt.Sprintf("report %s: %d files", name, len(info.Files))}, nil
}

// runRobustness runs the robustness study (Tables 4 and 5) as the CLI
// does by default, at the job's scale: its attacks train for the job's
// epochs, Points sets the fingerprint's start points and Focus its ε (the
// defaults when 0); the fingerprint is extracted from the fleet's training
// models and the derived models are kept beside the fleet's.
func (s *Server) runRobustness(ctx context.Context, a shared.ExperimentArgs, fleet *experiment.Fleet, ds experiment.Data, dir report.Dir, command string, rep shared.Reporter) error {
	src := fleet.Source()
	plan := robustnessPlan(a)
	var err error
	if plan.Transfer, err = s.transferSet("", src.Model.Spec, ds.Adversary.Classes); err != nil {
		return err
	}
	st, err := plan.Study(ds.Adversary, command)
	if err != nil {
		return err
	}
	cfg := fingerprint.DefaultConfig()
	if a.Points > 0 {
		cfg.Candidates = a.Points
	}
	if a.Focus > 0 {
		cfg.CBIM.Eps = a.Focus
	}
	cfg.Seed, cfg.Progress = plan.Seed, rep
	fp, err := experiment.StudyFingerprint(ctx, fleet, ds, cfg)
	if err != nil {
		return err
	}
	if fp.N == 0 {
		return fmt.Errorf("robustness: no fingerprint survived the filter (%d start points, ε = %g): a study needs at least one; ask for more points", fp.Meta.Candidates, fp.Meta.Eps)
	}
	_, err = st.Run(ctx, fleet, fp, ds, filepath.Join(s.modelsDir(), "derived"), dir, rep)
	return err
}

// robustnessPlan is the plan a robustness request asks for, before its
// transfer set: the CLI's default, or at full strength.
func robustnessPlan(a shared.ExperimentArgs) experiment.RobustnessPlan {
	plan := experiment.DefaultRobustnessPlan()
	if a.Epochs > 0 {
		plan.Epochs = a.Epochs
	}
	if a.Full {
		plan = plan.FullStrength()
	}
	return plan
}

// keepReport records a report folder under reports/.
func (s *Server) keepReport(ctx context.Context, name, study, job string) (shared.ReportInfo, error) {
	dir := filepath.Join(s.reports, name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return shared.ReportInfo{}, fmt.Errorf("reading report %s: %w", name, err)
	}
	info := shared.ReportInfo{Name: name, Study: study, Job: job, Created: time.Now().UTC(), Files: []string{}}
	for _, e := range entries {
		if e.Type().IsRegular() && (strings.HasSuffix(e.Name(), ".md") || strings.HasSuffix(e.Name(), ".png")) {
			info.Files = append(info.Files, e.Name())
		}
	}
	sort.SliceStable(info.Files, func(i, k int) bool {
		return strings.HasSuffix(info.Files[i], ".md") && !strings.HasSuffix(info.Files[k], ".md")
	})
	return info, s.store.PutReport(ctx, info, dir)
}

// in01 says whether v lies in [0,1] (NaN does not).
func in01(v float64) bool { return v >= 0 && v <= 1 }

// finite replaces NaN and infinities, which JSON cannot carry, by 0.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}
