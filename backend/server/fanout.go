package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/request"
	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// Fan-out. An experiment with Fanout queues one job per model of its
// study's plan (the source first, since surrogates learn from it, then all
// the others at once); each trains its model into the folder of trained
// models that the experiment's own run then finds (experiment.Build reuses
// a model whose recorded key matches, and retrains one that does not, so
// a model made under other settings is never used). An extraction that
// asks for its own training models
// (ExtractArgs.Train) queues one training job per model, on the same kind
// of device, so that a fleet trains them on all its workers at once. Until
// they are done the extraction waits without holding a worker: each time
// River hands it out, gather looks at its training jobs and snoozes it
// again (a snooze is not an attempt). When they have all completed, their
// models join the request's surrogates, references and twins and the
// extraction runs.

// gatherPoll is how long an extraction waits between looks at its
// training jobs.
const gatherPoll = time.Second

// checkExtractModels checks an extraction's training models: given ones
// (their IDs), ones to train, or both.
func checkExtractModels(a *shared.ExtractArgs) error {
	nSurr, nRefs := len(a.Surrogates), len(a.References)
	if t := a.Train; t != nil {
		if t.Surrogates < 0 || t.References < 0 || t.Twins < 0 || t.Surrogates+t.References+t.Twins > 256 {
			return badInput("train: %d surrogates, %d references and %d twins: want 0 to 256 models in all", t.Surrogates, t.References, t.Twins)
		}
		for _, arch := range t.Archs {
			if !slices.Contains(nn.Architectures(), arch) {
				return badInput("train: arch %q: want one of %s", arch, strings.Join(nn.Architectures(), ", "))
			}
		}
		if t.Epochs < 0 || t.Epochs > request.MaxEpochs {
			return badInput("train: epochs %d: want 0 to %d", t.Epochs, request.MaxEpochs)
		}
		if t.Limit < 0 {
			return badInput("train: limit %d: want 0 (all) or more", t.Limit)
		}
		if len(t.Jobs) != 0 || t.Gathered {
			return badInput("train: jobs and gathered are the server's to set")
		}
		nSurr, nRefs = nSurr+t.Surrogates, nRefs+t.References
	}
	if nSurr == 0 || nRefs == 0 {
		return badInput("extract needs at least one surrogate and one reference (given, or to train)")
	}
	return nil
}

// gather is called before each attempt of a job. It returns true when the
// job is ready to run, and otherwise the error that tells River to hand it
// out again later (a snooze) or never (it failed).
func (s *Server) gather(ctx context.Context, id string) (bool, error) {
	j, err := s.store.Job(ctx, id)
	if err != nil || j.State.Final() {
		return true, nil // work records what is wrong
	}
	if e := j.Args.Experiment; j.Kind == shared.JobExperiment && e != nil && e.Fanout && !e.Gathered {
		return s.gatherExperiment(ctx, j)
	}
	if j.Kind != shared.JobExtract || j.Args.Extract == nil {
		return true, nil
	}
	t := j.Args.Extract.Train
	if t == nil || t.Gathered {
		return true, nil
	}
	if len(t.Jobs) == 0 {
		ids, err := s.fanOut(ctx, j)
		if err != nil {
			s.finish(ctx, id, shared.JobFailed, nil, err.Error())
			return false, river.JobCancel(err)
		}
		if j, err = s.store.UpdateJob(ctx, id, func(j *shared.Job) { j.Args.Extract.Train.Jobs = ids }); err != nil {
			return false, err
		}
		t = j.Args.Extract.Train
		s.emit(ctx, shared.Event{Job: id, Kind: shared.Log, Stage: "train models",
			Message: fmt.Sprintf("queued %d training jobs: %d surrogates, %d references and %d twins (jobs %s)", len(ids), t.Surrogates, t.References, t.Twins, strings.Join(ids, ", "))})
	}
	var surr, refs, twins []string
	done := 0
	for i, cid := range t.Jobs {
		c, err := s.store.Job(ctx, cid)
		if err != nil {
			return false, err
		}
		switch {
		case c.State == shared.JobCompleted && c.Result != nil && len(c.Result.Models) == 1:
			done++
			switch id := c.Result.Models[0].ID; {
			case i < t.Surrogates:
				surr = append(surr, id)
			case i < t.Surrogates+t.References:
				refs = append(refs, id)
			default:
				twins = append(twins, id)
			}
		case c.State.Final():
			err := fmt.Errorf("training job %s %s: %s", cid, c.State, c.Error)
			s.finish(ctx, id, shared.JobFailed, nil, err.Error())
			return false, river.JobCancel(err)
		}
	}
	if done < len(t.Jobs) {
		s.emit(ctx, shared.Event{Job: id, Kind: shared.Progress, Stage: "train models", Step: int64(done), Total: int64(len(t.Jobs)),
			Message: fmt.Sprintf("%d of %d training models trained", done, len(t.Jobs))})
		return false, river.JobSnooze(gatherPoll)
	}
	if _, err := s.store.UpdateJob(ctx, id, func(j *shared.Job) {
		a := j.Args.Extract
		a.Surrogates = append(a.Surrogates, surr...)
		a.References = append(a.References, refs...)
		a.Twins = append(a.Twins, twins...)
		a.Train.Gathered = true
	}); err != nil {
		return false, err
	}
	return true, nil
}

// fanOut queues an extraction's training jobs: surrogates retrained on the
// source's labels, references trained on ground truth (architectures taken
// in turn), and twins trained on ground truth with the source's
// architecture and recorded recipe, all on the defender's split (§2.4),
// each with a seed of its own that is not the source's.
func (s *Server) fanOut(ctx context.Context, j shared.Job) ([]string, error) {
	a, t := j.Args.Extract, j.Args.Extract.Train
	src, path, err := s.store.Model(ctx, a.Source)
	if err != nil {
		return nil, fmt.Errorf("extract: source: %w", err)
	}
	archs := t.Archs
	if len(archs) == 0 {
		archs = []string{src.Arch}
	}
	like, err := trainedAs(src, path) // without twins, only its seed matters: to keep clear of
	if err != nil && t.Twins > 0 {
		return nil, err
	}
	// The seeds: 1000, 2000, … after the request's, in the jobs' order,
	// passing over the source's own (a reference of its architecture, or a
	// twin, with its seed and recipe would be the source again).
	next := 0
	seed := func() int64 {
		for {
			next++
			if v := int64(1000*next) + a.Seed; v != 0 && fmt.Sprint(v) != like.seed {
				return v
			}
		}
	}
	dataset := cmp.Or(a.Dataset, src.Dataset) // where the extraction runs (runExtract)
	n := t.Surrogates + t.References + t.Twins
	var ids []string
	for i := range n {
		var args shared.TrainArgs
		k := i // the model's number among its role's
		switch {
		case i < t.Surrogates:
			args = shared.TrainArgs{Arch: archs[k%len(archs)], Role: shared.RoleSurrogate, Teacher: a.Source, Epochs: t.Epochs}
		case i < t.Surrogates+t.References:
			k -= t.Surrogates
			args = shared.TrainArgs{Arch: archs[k%len(archs)], Role: shared.RoleReference, Epochs: t.Epochs}
		default:
			k -= t.Surrogates + t.References
			args = shared.TrainArgs{Arch: like.arch, Role: shared.RoleTwin, Recipe: like.recipe}
		}
		args.DataArgs = shared.DataArgs{Dataset: dataset, Split: "defender", SplitSeed: a.SplitSeed, Limit: t.Limit}
		args.Name, args.Seed = fmt.Sprintf("job%s-%s-%s-%d", j.ID, args.Role, args.Arch, k), seed()
		c, err := s.Submit(ctx, shared.JobRequest{Kind: shared.JobTrain, Train: &args})
		if err != nil {
			var in inputError
			if errors.As(err, &in) {
				return ids, fmt.Errorf("extract: a training job: %w", err)
			}
			return ids, fmt.Errorf("extract: queueing training job %d of %d: %w", i+1, n, err)
		}
		ids = append(ids, c.ID)
	}
	return ids, nil
}

// trainedLike is how a model was trained, as its file records it: what a
// twin of it is trained with (but its seed).
type trainedLike struct {
	arch, recipe, seed string
}

// trainedAs reads how the stored model m (its file at path) was trained:
// its architecture and recipe (train.RecipeOf), and its seed (which it
// returns whenever the file reads). A model that records no recipe
// (uploaded, pruned, quantized, or trained before recipes were recorded)
// has no twins: that is an error.
func trainedAs(m shared.ModelInfo, path string) (trainedLike, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return trainedLike{}, fmt.Errorf("extract: source %s: %w", m.Name, err)
	}
	like := trainedLike{arch: f.Metadata["arch"], seed: f.Metadata["train.seed"]}
	r, ok, err := train.RecipeOf(f.Metadata)
	if err != nil || !ok || like.arch == "" {
		return like, fmt.Errorf("extract: train.twins: the source %s records no training recipe and architecture to train its twins with (%v)", m.Name, cmp.Or[error](err, errors.New("none recorded")))
	}
	like.recipe = r.String()
	return like, nil
}

// modelsDir is the folder of an experiment's trained models: in a fleet
// with a shared artifact folder, beside the artifacts, so that every
// member finds the models the others trained.
func (s *Server) modelsDir() string {
	if s.fleet != nil && s.art.remote == nil {
		return filepath.Join(s.art.dir, "fleet")
	}
	return filepath.Join(s.cfg.Dir, "fleet")
}

// checkExperimentFanout checks the fan-out fields of an experiment.
func (s *Server) checkExperimentFanout(a *shared.ExperimentArgs) error {
	if len(a.Jobs) != 0 || a.Gathered {
		return badInput("jobs and gathered are the server's to set")
	}
	if a.Fanout && a.Member != "" {
		return badInput("fanout and member exclude each other")
	}
	if a.Fanout && s.art.remote != nil {
		return badInput("fanout needs the fleet's artifacts in a shared folder: with an object store, each worker keeps its own models")
	}
	if a.Member != "" && !slices.ContainsFunc(experimentPlan(*a), func(m *experiment.Member) bool { return m.Name == a.Member }) {
		return badInput("member %q is not a model of this study's plan", a.Member)
	}
	return nil
}

// experimentPlan is the plan of an experiment's models, with the same
// defaults as runExperiment (were they to differ, Build would retrain the
// models, not misuse them).
func experimentPlan(a shared.ExperimentArgs) []*experiment.Member {
	st := request.Experiment(a)
	return experiment.Plan(st.SourceArch, st.Archs, st.Per, st.Epochs)
}

// experimentData is an experiment's data: the defender's and adversary's
// halves of the training set (split seed 1) and the test set.
func (s *Server) experimentData(a shared.ExperimentArgs) (experiment.Data, error) {
	full, test, err := s.loadData(shared.DataArgs{Dataset: a.Dataset, Split: "all", Limit: a.Limit}, "all")
	if err != nil {
		return experiment.Data{}, err
	}
	def, adv := data.Split(full, 1)
	return experiment.Data{Defender: def, Adversary: adv, Test: test, Tag: fmt.Sprintf("%s/split=1/limit=%d", full.Name, a.Limit)}, nil
}

// runMember trains one model of an experiment's plan (with the source,
// which it loads when it is there).
func (s *Server) runMember(ctx context.Context, a shared.ExperimentArgs, rep shared.Reporter) (*shared.JobResult, error) {
	var plan []*experiment.Member
	for _, m := range experimentPlan(a) {
		if m.Role == experiment.Source || m.Name == a.Member {
			plan = append(plan, m)
		}
	}
	ds, err := s.experimentData(a)
	if err != nil {
		return nil, err
	}
	fl, err := experiment.Build(ctx, s.modelsDir(), plan, ds, s.device, rep)
	if err != nil {
		return nil, err
	}
	defer fl.Free()
	for _, m := range fl.Members {
		if m.Name == a.Member {
			how := "trained"
			if m.FromDisk {
				how = "found trained"
			}
			return &shared.JobResult{Message: fmt.Sprintf("%s (%s, %s): %s, test accuracy %.4f", m.Name, m.Arch, m.Role, how, m.TestAcc)}, nil
		}
	}
	return nil, fmt.Errorf("member %q is not in the study's plan", a.Member)
}

// gatherExperiment queues an experiment's model jobs and waits for them.
func (s *Server) gatherExperiment(ctx context.Context, j shared.Job) (bool, error) {
	a := j.Args.Experiment
	plan := experimentPlan(*a)
	queue := func(members []*experiment.Member) error {
		var ids []string
		for _, m := range members {
			c := *a
			c.Fanout, c.Member, c.Name, c.Jobs = false, m.Name, "", nil
			cj, err := s.Submit(ctx, shared.JobRequest{Kind: shared.JobExperiment, Experiment: &c})
			if err != nil {
				return fmt.Errorf("experiment: queueing the job of %s: %w", m.Name, err)
			}
			ids = append(ids, cj.ID)
		}
		var err error
		j, err = s.store.UpdateJob(ctx, j.ID, func(j *shared.Job) { j.Args.Experiment.Jobs = append(j.Args.Experiment.Jobs, ids...) })
		if err == nil {
			s.emit(ctx, shared.Event{Job: j.ID, Kind: shared.Log, Stage: "train models",
				Message: fmt.Sprintf("queued %d model jobs (%s)", len(ids), strings.Join(ids, ", "))})
		}
		return err
	}
	fail := func(err error) (bool, error) {
		s.finish(ctx, j.ID, shared.JobFailed, nil, err.Error())
		return false, river.JobCancel(err)
	}
	if len(a.Jobs) == 0 {
		if err := queue(plan[:1]); err != nil { // the source
			return fail(err)
		}
		a = j.Args.Experiment
	}
	done := 0
	for _, cid := range a.Jobs {
		c, err := s.store.Job(ctx, cid)
		if err != nil {
			return false, err
		}
		switch {
		case c.State == shared.JobCompleted:
			done++
		case c.State.Final():
			return fail(fmt.Errorf("model job %s (%s) %s: %s", cid, c.Args.Experiment.Member, c.State, c.Error))
		}
	}
	if done == len(a.Jobs) && len(a.Jobs) == 1 && len(plan) > 1 {
		if err := queue(plan[1:]); err != nil {
			return fail(err)
		}
		a = j.Args.Experiment
	}
	if done < len(plan) {
		s.emit(ctx, shared.Event{Job: j.ID, Kind: shared.Progress, Stage: "train models", Step: int64(done), Total: int64(len(plan)),
			Message: fmt.Sprintf("%d of %d models trained", done, len(plan))})
		return false, river.JobSnooze(gatherPoll)
	}
	if _, err := s.store.UpdateJob(ctx, j.ID, func(j *shared.Job) { j.Args.Experiment.Gathered = true }); err != nil {
		return false, err
	}
	return true, nil
}
