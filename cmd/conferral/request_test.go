package main

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/request"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// extractOf is the extraction configuration the CLI's flags ask for, and
// the request they build.
func extractOf(t *testing.T, flags []string) (shared.ExtractArgs, *flag.FlagSet) {
	t.Helper()
	fs := flag.NewFlagSet("extract", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	argsOf := extractFlags(fs)
	if err := fs.Parse(flags); err != nil {
		t.Fatal(err)
	}
	a, err := argsOf()
	if err != nil {
		t.Fatal(err)
	}
	return a, fs
}

// apiExtract is the configuration the server makes of a request that came
// over the wire: the request as JSON, decoded, converted.
func apiExtract(t *testing.T, a shared.ExtractArgs) fingerprint.Config {
	t.Helper()
	r := overWire(t, shared.JobRequest{Kind: shared.JobExtract, Extract: &a})
	c, err := request.Extract(*r.Extract)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// overWire is v as the server receives it: encoded as JSON and decoded.
func overWire[T any](t *testing.T, v T) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var w T
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestExtractRequestOneConfig: the same extraction asked for on the
// command line, over the API and by the demo (locally and as the served
// demo's job) makes the same configuration; τ = 0 and dropout = 0 reach
// the attack on each path.
func TestExtractRequestOneConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		body  string
		check func(c fingerprint.Config) bool
	}{
		{"defaults", nil, `{}`, func(c fingerprint.Config) bool {
			return reflect.DeepEqual(c, fingerprint.DefaultConfig())
		}},
		{"zero tau and dropout", []string{"--tau", "0", "--dropout", "0"}, `{"tau":0,"dropout":0}`, func(c fingerprint.Config) bool {
			return c.Tau == 0 && c.CBIM.Dropout == 0
		}},
		{"every setting", []string{"--eps", "0.1", "--alpha", "0.02", "--steps", "5", "--dropout", "0.25", "--loss", "ce", "--best-iterate", "--shift", "1", "--noise", "0.1",
			"--tau", "0.5", "--tau-surr", "0.75", "--candidates", "10", "--batch", "7", "--seed", "3"},
			`{"eps":0.1,"alpha":0.02,"steps":5,"dropout":0.25,"loss":"ce","best_iterate":true,"shift":1,"noise":0.1,"tau":0.5,"tau_surr":0.75,"candidates":10,"batch":7,"seed":3}`,
			func(c fingerprint.Config) bool {
				return c.CBIM.Eps == 0.1 && c.CBIM.Dropout == 0.25 && c.CBIM.Shift == 1 && c.TauSurr == 0.75 && c.Batch == 7 && c.Seed == 3
			}},
		{"natural", []string{"--natural", "--tau", "0.6"}, `{"natural":true,"tau":0.6}`, func(c fingerprint.Config) bool {
			return c.Natural && c.Tau == 0.6
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := extractOf(t, tc.flags)
			cli, err := request.Extract(a)
			if err != nil {
				t.Fatal(err)
			}
			var body shared.ExtractArgs
			if err := json.Unmarshal([]byte(tc.body), &body); err != nil {
				t.Fatal(err)
			}
			if api := apiExtract(t, body); !reflect.DeepEqual(cli, api) {
				t.Errorf("the CLI's %q and the API's %s differ:\n%+v\n%+v", tc.flags, tc.body, cli, api)
			}
			if !tc.check(cli) {
				t.Errorf("%q: %+v", tc.flags, cli)
			}
			// The demo: the same flags, with the study's settings where they
			// are left alone, locally and as the served demo's job.
			if a.Natural {
				return
			}
			a, fs := extractOf(t, tc.flags)
			ex := demoExtract(fs, a)
			local, err := request.Extract(ex)
			if err != nil {
				t.Fatal(err)
			}
			if served := apiExtract(t, ex); !reflect.DeepEqual(local, served) {
				t.Errorf("the demo's %q: locally %+v, served %+v", tc.flags, local, served)
			}
			for _, f := range tc.flags {
				if f == "--tau" && local.Tau != cli.Tau || f == "--dropout" && local.CBIM.Dropout != cli.CBIM.Dropout || f == "--shift" && local.CBIM.Shift != cli.CBIM.Shift {
					t.Errorf("the demo's %s does not reach the configuration: %+v, want as %+v", f, local, cli)
				}
			}
			if _, err := request.Extract(demoNatural(ex)); err != nil {
				t.Errorf("the demo's natural request: %v", err)
			}
		})
	}
}

// TestDemoExtractDefaults: the demo's study settings apply where the
// command line is silent and give way where it speaks, zeros included.
func TestDemoExtractDefaults(t *testing.T) {
	a, fs := extractOf(t, nil)
	c, err := request.Extract(demoExtract(fs, a))
	if err != nil {
		t.Fatal(err)
	}
	if c.CBIM.Eps != 0.05 || c.CBIM.Steps != 50 || !c.CBIM.Best || c.Tau != 0.5 || c.TauSurr != 1 || c.Candidates != 1000 {
		t.Errorf("the demo's defaults: %+v", c)
	}
	a, fs = extractOf(t, []string{"--tau", "0", "--tau-surr", "0", "--best-iterate=false", "--dropout", "0"})
	c, err = request.Extract(demoExtract(fs, a))
	if err != nil {
		t.Fatal(err)
	}
	if c.Tau != 0 || c.TauSurr != 0 || c.CBIM.Best || c.CBIM.Dropout != 0 {
		t.Errorf("zeros on the demo's command line: %+v, want τ = τ_S = dropout = 0 and the last iterate", c)
	}
}

// TestTrainingRequestOneConfig: the same training asked for with the
// CLI's flags and over the API makes the same configuration, for a train
// and for a derive request, zero momentum and decay included.
func TestTrainingRequestOneConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		body  string
	}{
		{"defaults", nil, `{}`},
		{"single fields", []string{"--epochs", "3", "--batch", "32", "--lr", "0.1", "--schedule", "constant", "--no-augment", "--seed", "7"},
			`{"epochs":3,"batch_size":32,"lr":0.1,"schedule":"constant","no_augment":true,"seed":7}`},
		{"zeros that mean something", []string{"--momentum", "0", "--weight-decay", "0"}, `{"momentum":0,"weight_decay":0}`},
		{"a recipe and an optimizer over it", []string{"--recipe", "adam,bs=64,epochs=4", "--optimizer", "sgd"}, `{"recipe":"adam,bs=64,epochs=4","optimizer":"sgd"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("train", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var tf trainingFlags
			tf.register(fs)
			if err := fs.Parse(tc.flags); err != nil {
				t.Fatal(err)
			}
			if err := tf.check(); err != nil {
				t.Fatal(err)
			}
			var cliTrain shared.TrainArgs
			tf.intoTrain(&cliTrain)
			cliDerive := shared.DeriveArgs{Attack: "retraining"}
			tf.intoDerive(&cliDerive)

			var apiTrain shared.TrainArgs
			var apiDerive shared.DeriveArgs
			if err := json.Unmarshal([]byte(tc.body), &apiTrain); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.body), &apiDerive); err != nil {
				t.Fatal(err)
			}
			apiDerive.Attack = "retraining"
			c1, err1 := request.Train(cliTrain)
			c2, err2 := request.Train(apiTrain)
			if err1 != nil || err2 != nil || !reflect.DeepEqual(c1, c2) {
				t.Errorf("train: the CLI's %q and the API's %s differ:\n%+v (%v)\n%+v (%v)", tc.flags, tc.body, c1, err1, c2, err2)
			}
			d1, err1 := request.Derive(cliDerive)
			d2, err2 := request.Derive(apiDerive)
			if err1 != nil || err2 != nil || d1.Attack.Name != d2.Attack.Name || d1.Examples != d2.Examples || !reflect.DeepEqual(d1.Config, d2.Config) || !reflect.DeepEqual(d1.Options, d2.Options) {
				t.Errorf("derive: the CLI's %q and the API's %s differ:\n%+v (%v)\n%+v (%v)", tc.flags, tc.body, d1, err1, d2, err2)
			}
			if tc.name == "zeros that mean something" && (c1.Momentum != 0 || c1.WeightDecay != 0 || d1.Config.Momentum != 0 || d1.Config.WeightDecay != 0) {
				t.Errorf("zero momentum and decay do not reach the training: %+v, %+v", c1, d1.Config)
			}
		})
	}
}

// TestDemoTrainRequest: a demo model's training is the project's default
// recipe for its epochs from its own seed, whether the local demo converts
// its request or the served demo's job carries it over the wire.
func TestDemoTrainRequest(t *testing.T) {
	for _, teacher := range []string{"", "source-id"} {
		a := demoTrain("train-surrogate-mlp-1", "mlp", 4, 101, teacher)
		local, err := request.Train(a)
		if err != nil {
			t.Fatal(err)
		}
		served, err := request.Train(overWire(t, a))
		if err != nil {
			t.Fatal(err)
		}
		want := train.Defaults(4)
		want.Seed = 101
		if !reflect.DeepEqual(local, served) || local.Recipe() != want.Recipe() || local.Seed != 101 {
			t.Errorf("teacher %q: local %+v, served %+v, want the default recipe for 4 epochs from seed 101", teacher, local, served)
		}
	}
	if a := demoTrain("x", "mlp", 1, 1, "src"); a.Role != shared.RoleSurrogate {
		t.Errorf("a model trained on the source's labels is a %s", a.Role)
	}
}

// TestFlagZerosRefused: a zero the command line gives where a request
// reads zero as the default is a usage error, not the default.
func TestFlagZerosRefused(t *testing.T) {
	for _, flags := range [][]string{{"--steps", "0"}, {"--eps", "0"}, {"--alpha", "-1"}, {"--candidates", "0"}, {"--batch", "0"}} {
		fs := flag.NewFlagSet("extract", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		argsOf := extractFlags(fs)
		if err := fs.Parse(flags); err != nil {
			t.Fatal(err)
		}
		var ue usageError
		if _, err := argsOf(); !errors.As(err, &ue) || !strings.Contains(err.Error(), flags[0]+" ") {
			t.Errorf("%q: %v, want a usage error naming %s", flags, err, flags[0])
		}
	}
	for _, flags := range [][]string{{"--epochs", "0"}, {"--batch", "0"}, {"--lr", "0"}} {
		fs := flag.NewFlagSet("train", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var tf trainingFlags
		tf.register(fs)
		if err := fs.Parse(flags); err != nil {
			t.Fatal(err)
		}
		if err := tf.check(); err == nil || !strings.Contains(err.Error(), flags[0]+" 0: want more than 0") {
			t.Errorf("%q: %v, want a usage error", flags, err)
		}
	}
}

// TestDeriveRequestOneConfig: the same attack settings asked for with
// `conferral derive`'s flags and over the API make the same derivation,
// β = 0 and the combined attack's steps included; a zero given on the
// command line where the request reads zero as the default is refused.
func TestDeriveRequestOneConfig(t *testing.T) {
	for _, tc := range []struct {
		name, attack string
		flags        []string
		body         string
		check        func(o train.Options) bool
	}{
		{"fgm defaults", "fgm", nil, `{}`, func(o train.Options) bool { return o.Adv == train.AdvDefaults(train.AttackFGM) }},
		{"fgm radius", "fgm", []string{"--adv-eps", "0.2"}, `{"adv_eps":0.2}`, func(o train.Options) bool { return o.Adv.Eps == 0.2 }},
		{"pgd", "pgd", []string{"--adv-eps", "0.5", "--adv-alpha", "0.02", "--adv-steps", "10"}, `{"adv_eps":0.5,"adv_alpha":0.02,"adv_steps":10}`,
			func(o train.Options) bool {
				return o.Adv.Eps == 0.5 && o.Adv.Alpha == 0.02 && o.Adv.Steps == 10 && o.Robust == train.RobustDefaults()
			}},
		{"pgd-at", "pgd-at", []string{"--adv-eps", "0.2", "--adv-alpha", "0.05", "--adv-steps", "3", "--epochs", "2"}, `{"adv_eps":0.2,"adv_alpha":0.05,"adv_steps":3,"epochs":2}`,
			func(o train.Options) bool {
				return o.Robust == train.RobustOpts{Eps: 0.2, Alpha: 0.05, Steps: 3, Beta: train.RobustDefaults().Beta}
			}},
		{"trades defaults", "trades", nil, `{}`, func(o train.Options) bool { return o.Robust == train.RobustDefaults() }},
		{"trades beta 0", "trades", []string{"--beta", "0"}, `{"beta":0}`, func(o train.Options) bool { return o.Robust.Beta == 0 && o.Robust.Eps == train.RobustDefaults().Eps }},
		{"trades every setting", "trades", []string{"--adv-eps", "0.3", "--adv-alpha", "0.1", "--adv-steps", "4", "--beta", "1.5"}, `{"adv_eps":0.3,"adv_alpha":0.1,"adv_steps":4,"beta":1.5}`,
			func(o train.Options) bool {
				return o.Robust == train.RobustOpts{Eps: 0.3, Alpha: 0.1, Steps: 4, Beta: 1.5}
			}},
		{"combined defaults", "combined", nil, `{}`, func(o train.Options) bool { return o.Steps == train.DefaultSteps }},
		{"combined steps", "combined", []string{"--steps", "retrain,finetune,quantize", "--bits", "4", "--temperature", "3"}, `{"steps":"retrain,finetune,quantize","bits":4,"temperature":3}`,
			func(o train.Options) bool {
				return o.Steps == "retrain,finetune,quantize" && o.Bits == 4 && o.Temperature == 3
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("derive", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			requestOf := deriveFlags(fs)
			var tf trainingFlags
			tf.register(fs)
			if err := fs.Parse(tc.flags); err != nil {
				t.Fatal(err)
			}
			if err := tf.check(); err != nil {
				t.Fatal(err)
			}
			cliArgs, err := requestOf(tc.attack, "")
			if err != nil {
				t.Fatal(err)
			}
			tf.intoDerive(&cliArgs)
			var apiArgs shared.DeriveArgs
			if err := json.Unmarshal([]byte(tc.body), &apiArgs); err != nil {
				t.Fatal(err)
			}
			apiArgs.Attack = tc.attack
			wire := overWire(t, shared.JobRequest{Kind: shared.JobDerive, Derive: &apiArgs})
			d1, err1 := request.Derive(cliArgs)
			d2, err2 := request.Derive(*wire.Derive)
			if err1 != nil || err2 != nil || d1.Attack.Name != d2.Attack.Name || d1.Examples != d2.Examples || !reflect.DeepEqual(d1.Config, d2.Config) || !reflect.DeepEqual(d1.Options, d2.Options) {
				t.Fatalf("the CLI's %q and the API's %s differ:\n%+v (%v)\n%+v (%v)", tc.flags, tc.body, d1, err1, d2, err2)
			}
			if !tc.check(d1.Options) {
				t.Errorf("%q: %+v", tc.flags, d1.Options)
			}
		})
	}
	// A zero the request would read as the default is refused, not
	// silently replaced (--fraction 0 pruned half the weights).
	for _, flags := range [][]string{{"--adv-eps", "0"}, {"--adv-alpha", "-1"}, {"--adv-steps", "0"}, {"--steps", ""},
		{"--fraction", "0"}, {"--bits", "0"}, {"--members", "0"}, {"--temperature", "0"}} {
		fs := flag.NewFlagSet("derive", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		requestOf := deriveFlags(fs)
		if err := fs.Parse(flags); err != nil {
			t.Fatal(err)
		}
		var ue usageError
		if _, err := requestOf("trades", ""); !errors.As(err, &ue) || !strings.Contains(err.Error(), flags[0]) {
			t.Errorf("%q: %v, want a usage error naming %s", flags, err, flags[0])
		}
	}
}
