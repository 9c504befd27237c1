package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// demoModel is one model of the demo's fleet.
type demoModel struct {
	name, arch, split string
	teacher           string // name of the teacher; "" trains on ground truth
}

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	out := fs.String("out", "demo-out", "folder for the demo's models and reports")
	epochs := fs.Int("epochs", 3, "training epochs per model")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	df.split = "all"
	full, test, err := df.load()
	if err != nil {
		return err
	}
	_ = full
	fleet := []demoModel{
		{"source", "cnn", "defender", ""},
		{"surrogate", "cnn", "adversary", "source"},
		{"reference", "cnn", "adversary", ""},
	}
	models := map[string]*nn.Model{}
	defer func() {
		for _, m := range models {
			m.Free()
		}
	}()
	fmt.Fprintf(e.stdout, "Conferral demo on %s (%d test images), device %v, models in %s\n", test.Name, test.Len(), e.device, *out)
	for _, fm := range fleet {
		df.split = fm.split
		trainSet, _, err := df.load()
		if err != nil {
			return err
		}
		cfg := train.Defaults(*epochs)
		cfg.Test, cfg.Progress = test, e.progress.Report
		cfg.Stage = fmt.Sprintf("train %s (%s, %s half)", fm.name, fm.arch, fm.split)
		m, err := nn.New(specFor(fm.arch, trainSet), uint64(len(models)+1), e.device)
		if err != nil {
			return err
		}
		models[fm.name] = m
		var res *train.Result
		if fm.teacher != "" {
			res, err = train.Retrain(ctx, models[fm.teacher], m, trainSet, cfg)
		} else {
			res, err = train.Train(ctx, m, trainSet, cfg)
		}
		if err != nil {
			return err
		}
		path := filepath.Join(*out, fm.name+".safetensors")
		if err := m.Save(path, map[string]string{"demo.role": fm.name}); err != nil {
			return err
		}
		e.progress.Report(shared.Event{Kind: shared.Log, Stage: "demo", Message: fmt.Sprintf("%s: test accuracy %.4f (%s)", fm.name, res.TestAccuracy, path)})
	}
	return nil
}
