// Command conferral fingerprints image classifiers with conferrable
// adversarial examples and verifies suspects. Run `conferral help`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"github.com/conferral/conferral/backend/torch"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"train":      {"train a model on a dataset split, or a surrogate of a teacher (--teacher)", runTrain},
		"eval":       {"report a model's test accuracy (overall and per class)", runEval},
		"info":       {"show the libtorch build, devices, threads and the model zoo", runInfo},
		"derive":     {"derive a model from a source by a removal attack (distillation, extraction, fine-tuning, ...)", runDerive},
		"extract":    {"craft a fingerprint from a source with C-BIM (Algorithm 2)", runExtract},
		"keygen":     {"make the defender's ed25519 key for signing fingerprints (extract --sign)", runKeygen},
		"calibrate":  {"measure how often independent models agree with a fingerprint: the null of calibrated verdicts", runCalibrate},
		"verify":     {"verify suspects against a fingerprint (Algorithm 1): derived, independent or inconclusive", runVerify},
		"experiment": {"reproduce the paper's studies: `experiment conferrability` (Table 1) or `experiment fingerprint` (Table 2)", runExperiment},
		"demo":       {"run the whole story on the embedded default (Fashion-MNIST, CPU)", runDemo},
		"bench":      {"benchmark the binding against PyTorch on the same libtorch", runBench},
		"serve":      {"serve the API, the job queue and the browser app (127.0.0.1:8080 by default)", runServe},
		"worker":     {"join a fleet: take jobs from a PostgreSQL queue (serve --database) on this machine's device", runWorker},
		"export":     {"write a zoo model as ONNX (normalisation inside, pixel-space NCHW input)", runExport},

		"serve-model": {"serve a model as a KServe v2 and TensorFlow Serving REST endpoint (demos, tests)", runServeModel},
	}
}

// env is what every command shares: output streams and common flags.
type env struct {
	stdout, stderr io.Writer
	device         torch.Device
	json           bool
	progress       *bar
}

// common registers the flags every command has and returns a function that
// applies them after parsing.
func common(fs *flag.FlagSet, e *env) func() error {
	fs.SetOutput(e.stderr)
	dev := fs.String("device", "auto", "where tensors live: auto, cpu, cuda or cuda:N")
	threads := fs.Int("threads", runtime.NumCPU(), "libtorch intra-op threads")
	fs.BoolVar(&e.json, "json", false, "print a machine-readable result on stdout")
	quiet := fs.Bool("quiet", false, "no progress output")
	return func() error {
		torch.SetNumThreads(*threads)
		d, err := torch.ParseDevice(*dev)
		if err != nil {
			return err
		}
		e.device = d
		e.progress = newBar(e.stderr, *quiet)
		return nil
	}
}

// emit prints v as JSON with --json, or text otherwise.
func (e *env) emit(v any, text string) error {
	if e.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := fmt.Fprint(e.stdout, text)
	return err
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: conferral COMMAND [flags]\n\ncommands:")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun `conferral COMMAND -h` for a command's flags.")
}

// The CLI does its tensor work on the main goroutine: keep it on one OS
// thread, which owns libtorch's OpenMP pool.
func init() { runtime.LockOSThread() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "conferral: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	e := &env{stdout: stdout, stderr: stderr}
	err := cmd.run(ctx, e, args[1:])
	if e.progress != nil {
		e.progress.done()
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(flagError)):
		return 2
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "conferral: cancelled")
		return 130
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "conferral %s: %v\n", args[0], err)
		return 2
	}
	fmt.Fprintf(stderr, "conferral %s: %v\n", args[0], strings.TrimSpace(err.Error()))
	return 1
}

// flagError is a flag the command does not know or cannot parse (the flag
// package has already printed it with the usage).
type flagError struct{ error }

// parse parses a command's flags, marking errors as usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return flagError{err}
	}
	return nil
}

// usageError is a mistake in the command line.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }
