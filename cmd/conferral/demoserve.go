package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/conferral/conferral/app"
	"github.com/conferral/conferral/backend/server"
	"github.com/conferral/conferral/shared"
)

// demoServe is `conferral demo --serve`: the demo's story run as jobs of a
// server on the embedded default, visible in the browser while it runs.
type demoServe struct {
	addr, web string
	keep      bool // serve on after the story until interrupted
	workers   int  // jobs at once
	threads   int  // libtorch threads per job
	solo      int  // threads of a job that runs alone
	out       string
	df        dataFlags
	epochs    int
	// calibration is how many independent models calibrate the verdicts.
	calibration int
	extract     shared.ExtractArgs
}

func runDemoServe(ctx context.Context, e *env, o demoServe) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := server.New(ctx, server.Config{Dir: filepath.Join(o.out, "server"), Device: e.device.String(), Workers: o.workers, Threads: o.threads, SoloThreads: o.solo, Results: resultsDir(""),
		Addr: o.addr, App: app.Handler(o.web), Version: "demo", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	ready := make(chan string, 1)
	served := make(chan error, 1)
	go func() { served <- s.ListenAndServe(ctx, func(a string) { ready <- a }) }()
	var url string
	select {
	case url = <-ready:
	case err := <-served:
		return err
	}
	fmt.Fprintf(e.stdout, "conferral demo: open http://%s/ to watch the jobs (data in %s)\n", url, filepath.Join(o.out, "server"))
	// The same events drive the progress bar here.
	events, stop := s.Subscribe("")
	defer stop()
	go func() {
		for ev := range events {
			e.progress.Report(ev)
		}
	}()
	err = demoStory(ctx, e, s, o)
	e.progress.done()
	if err == nil && o.keep {
		fmt.Fprintf(e.stdout, "The server goes on at http://%s/ — Ctrl-C stops it.\n", url)
		<-ctx.Done()
	} else if err == nil {
		fmt.Fprintf(e.stdout, "Browse the results again with: conferral serve --dir %s\n", filepath.Join(o.out, "server"))
	}
	cancel()
	if serr := <-served; err == nil && serr != nil && !errors.Is(serr, context.Canceled) {
		err = serr
	}
	return err
}

// demoStory submits the demo's jobs in order, each stage waiting for the
// models of the one before.
func demoStory(ctx context.Context, e *env, s *server.Server, o demoServe) error {
	data := shared.DataArgs{Dataset: o.df.name, SplitSeed: o.df.splitSeed, Limit: o.df.limit}
	run := func(reqs ...shared.JobRequest) ([]shared.Job, error) {
		var ids []string
		for _, r := range reqs {
			j, err := s.Submit(ctx, r)
			if err != nil {
				return nil, err
			}
			ids = append(ids, j.ID)
		}
		var out []shared.Job
		for _, id := range ids {
			j, err := s.Wait(ctx, id)
			if err != nil {
				return nil, err
			}
			if j.State != shared.JobCompleted {
				return nil, fmt.Errorf("demo: job %s (%s) %s: %s", j.ID, j.Kind, j.State, j.Error)
			}
			out = append(out, j)
		}
		return out, nil
	}
	trainReq := func(name, arch, split string, epochs int, seed int64, teacher string) shared.JobRequest {
		a := demoTrain(name, arch, epochs, seed, teacher)
		a.DataArgs = data
		a.Split = split
		return shared.JobRequest{Kind: shared.JobTrain, Train: &a}
	}
	clock := newStageClock()
	// 1. The defender trains the source model.
	src, err := run(trainReq("source", demoSourceArch, "defender", o.epochs+1, 1, ""))
	if err != nil {
		return err
	}
	sourceID := src[0].Result.Models[0].ID
	clock.lap("source (1 model)")
	// 2. Surrogates, references and calibration models on both halves,
	// queued together.
	fleet := demoFleet(o.epochs, o.calibration)
	var reqs []shared.JobRequest
	for i, fm := range fleet {
		split, teacher := "defender", ""
		if fm.adversary {
			split = "adversary"
		}
		if fm.surrogate {
			teacher = sourceID
		}
		reqs = append(reqs, trainReq(fm.name, fm.arch, split, fm.epochs, int64(100+i), teacher))
	}
	trained, err := run(reqs...)
	if err != nil {
		return err
	}
	ex := o.extract
	ex.DataArgs, ex.Source, ex.Name = data, sourceID, "demo fingerprint"
	for i, fm := range fleet {
		id := trained[i].Result.Models[0].ID
		switch {
		case fm.adversary:
		case fm.calibration:
			ex.Calibration = append(ex.Calibration, id)
		case fm.surrogate:
			ex.Surrogates = append(ex.Surrogates, id)
		default:
			ex.References = append(ex.References, id)
		}
	}
	clock.lap(fmt.Sprintf("fleet (%d models)", len(fleet)))
	// 3. The fingerprints, each calibrated by the independent models:
	// C-BIM's, and the source's own mistakes (demoNatural).
	nat := demoNatural(ex)
	fj, err := run(shared.JobRequest{Kind: shared.JobExtract, Extract: &ex}, shared.JobRequest{Kind: shared.JobExtract, Extract: &nat})
	if err != nil {
		return err
	}
	clock.lap("fingerprints and calibration")
	// 4. Verify the adversary's models, which the fingerprints never saw.
	var sb strings.Builder
	for _, f := range fj {
		fp := f.Result.Fingerprint
		reqs = reqs[:0]
		var names []string
		var surrogate []bool
		for i, fm := range fleet {
			if fm.adversary {
				reqs = append(reqs, shared.JobRequest{Kind: shared.JobVerify, Verify: &shared.VerifyArgs{Fingerprint: fp.ID, Model: trained[i].Result.Models[0].ID}})
				names, surrogate = append(names, fm.name), append(surrogate, fm.surrogate)
			}
		}
		verified, err := run(reqs...)
		if err != nil {
			return err
		}
		var rows []demoRow
		var null shared.Null
		threshold := 0.0
		for i, j := range verified {
			v := j.Result.Verdict
			if v.Null != nil {
				null = *v.Null
			}
			threshold = v.Threshold
			rows = append(rows, demoRow{name: names[i], surrogate: surrogate[i], outcome: v.Outcome, accuracy: v.Accuracy, agree: v.Matches, n: v.N, interval: v.Interval, p: v.PValue})
		}
		demoTable(&sb, fmt.Sprintf("%s; %s", fp.ID[:12], demoHow(fp.Attack, fp.Candidates, fp.Eps, fp.Tau)), fp.Count, null.Models, null.Mean, null.SD, threshold, null.FPR, rows)
	}
	clock.lap("verification")
	sb.WriteString(clock.String())
	_, err = fmt.Fprint(e.stdout, sb.String())
	return err
}
