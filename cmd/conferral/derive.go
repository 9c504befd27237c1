package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"image/color"
	_ "image/gif"  // decoders for transfer-set folders
	_ "image/jpeg" //
	_ "image/png"  //
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/image/draw"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/request"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

type deriveResult struct {
	Model              string            `json:"model"`
	SHA256             string            `json:"sha256"`
	Source             string            `json:"source"`
	Arch               string            `json:"arch"`
	Dataset            string            `json:"dataset"`
	Split              string            `json:"split"`
	Params             map[string]string `json:"params,omitempty"`
	Recipe             *train.Recipe     `json:"recipe,omitempty"` // how the derived model was trained (none for pruning and quantization)
	SourceTestAccuracy float64           `json:"source_test_accuracy"`
	*train.Derivation
}

func runDerive(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("derive", flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	df.split = "adversary" // the adversary derives from its own half (§6.1)
	fs.Lookup("split").DefValue = "adversary"
	fs.Lookup("data").Usage += " (default: the source's)"
	fs.Lookup("data").DefValue = ""
	name := fs.String("attack", "", "removal attack: "+strings.Join(train.Attacks(), ", ")+"; required")
	source := fs.String("source", "", "source model file; required")
	out := fs.String("out", "", "derived model file to write (safetensors); required")
	arch := fs.String("arch", "", "surrogate architecture for the attacks that train a new model (default: the source's)")
	transfer := fs.String("transfer", "", "Knockoff: transfer set, a dataset name or a folder of images (default: mnist for fashion-mnist)")
	transferDir := fs.String("transfer-dir", "", "Knockoff: folder of the transfer dataset when --transfer names one")
	transferSize := fs.Int("transfer-size", 0, "Knockoff: transfer images drawn at random (default: as many as the adversary's examples)")
	seeds := fs.Int("seeds", 0, "Papernot: initial substitute set size (default 150)")
	rounds := fs.Int("rounds", 0, "Papernot: substitute training rounds, the set doubling between them (default 6); --epochs is per round")
	step := fs.Float64("papernot-lambda", 0, "Papernot: augmentation step λ (default 0.1)")
	tau := fs.Int("papernot-tau", 0, "Papernot: flip λ's sign every τ rounds (0: never)")
	requestOf := deriveFlags(fs)
	norm := fs.String("norm", "", "fgm, pgd: linf or l2 (default linf for fgm, l2 for pgd)")
	advFraction := fs.Float64("adv-fraction", train.DefaultOptions("").Adv.Fraction, "fgm, pgd: adversarial examples per clean example of a batch")
	var tf trainingFlags
	tf.register(fs)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintln(w, "usage: conferral derive --attack NAME --source M --out S [flags]\n\nattacks (paper §2.4 and §6.3, and beyond):")
		for _, a := range train.Registry() {
			fmt.Fprintf(w, "  %-12s %s\n", a.Name, a.Summary)
		}
		fmt.Fprintln(w, "\nWithout --recipe, training takes the attack's defaults (fine-tuning: 5 epochs at lr 0.01);\nsingle training flags override either.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	atk, attackErr := train.ParseAttack(*name)
	switch {
	case *name == "":
		return usagef("--attack is required (one of %s)", strings.Join(train.Attacks(), ", "))
	case attackErr != nil:
		return usagef("--%v", attackErr) // --attack "NAME": want one of …
	case *source == "":
		return usagef("--source is required")
	case *out == "":
		return usagef("--out is required")
	}
	if err := tf.check(); err != nil {
		return err
	}
	req, err := requestOf(*name, *arch)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// The flags of one kind of attack (the request's own fields are
	// request.Derive's to refuse).
	for _, u := range []struct {
		flags   []string
		attacks []string
	}{
		{[]string{"norm", "adv-fraction"}, []string{train.AttackFGM, train.AttackPGD}},
		{[]string{"transfer", "transfer-dir", "transfer-size"}, []string{train.AttackKnockoff}},
		{[]string{"seeds", "rounds", "papernot-lambda", "papernot-tau"}, []string{train.AttackPapernot}},
	} {
		for _, f := range u.flags {
			if set[f] && !slices.Contains(u.attacks, *name) {
				return usagef("--%s: %s does not use it (only %s)", f, *name, strings.Join(u.attacks, ", "))
			}
		}
	}
	tf.intoDerive(&req)
	job, err := request.Derive(req)
	if err != nil {
		return usageError{err}
	}
	cfg := job.Config
	if *arch != "" && !slices.Contains(nn.Architectures(), *arch) {
		return usagef("--arch %q: want one of %s", *arch, strings.Join(nn.Architectures(), ", "))
	}
	if err := apply(); err != nil {
		return err
	}

	src, _, err := nn.Load(*source, e.device)
	if err != nil {
		return err
	}
	defer src.Free()
	if !set["data"] {
		df.name = src.Spec.Dataset
	}
	trainSet, testSet, err := df.load()
	if err != nil {
		return err
	}
	if trainSet.C != int(src.Spec.C) || trainSet.H != int(src.Spec.H) || trainSet.W != int(src.Spec.W) || trainSet.NumClasses() != len(src.Spec.Classes) {
		return usagef("the source %s classifies %dx%dx%d images into %d classes, %s has %dx%dx%d images of %d classes",
			*source, src.Spec.C, src.Spec.H, src.Spec.W, len(src.Spec.Classes), trainSet.Name, trainSet.C, trainSet.H, trainSet.W, trainSet.NumClasses())
	}
	trainSet = trainSet.First(job.Examples)

	// The flags of attack parameters the API does not take.
	o := job.Options
	if *seeds != 0 {
		o.Papernot.Seeds = *seeds
	}
	if *rounds != 0 {
		o.Papernot.Rounds = *rounds
	}
	if *step != 0 {
		o.Papernot.Lambda = *step
	}
	o.Papernot.Tau = *tau
	if *norm != "" {
		if o.Adv.Norm, err = attack.ParseNorm(*norm); err != nil {
			return usageError{err}
		}
	}
	o.Adv.Fraction = *advFraction
	o.TransferSize = *transferSize
	if *name == train.AttackKnockoff {
		if o.Transfer, err = loadTransfer(*transfer, *transferDir, src.Spec, trainSet, max(o.TransferSize, trainSet.Len()), cfg.Seed); err != nil {
			return err
		}
	}

	srcAcc, err := train.Accuracy(ctx, src, testSet, nil)
	if err != nil {
		return err
	}
	srcSum, err := fileSHA256(*source)
	if err != nil {
		return err
	}
	cfg.Test, cfg.Progress = testSet, e.progress.Report
	m, der, err := train.Derive(ctx, *name, src, trainSet, o, cfg)
	if err != nil {
		return err
	}
	defer m.Free()

	params := atk.Params(o, cfg)
	meta := map[string]string{
		"derive.attack": *name, "derive.source_sha256": srcSum, "derive.queries": fmt.Sprint(der.Queries),
		"derive.examples": fmt.Sprint(der.Examples), "train.split": df.split, "train.split_seed": fmt.Sprint(df.splitSeed),
		"train.created": time.Now().UTC().Format(time.RFC3339), "test_accuracy": fmt.Sprintf("%.4f", der.TestAccuracy),
	}
	for k, v := range params {
		meta["derive."+k] = v
	}
	var rec *train.Recipe
	if atk.Trains {
		r := cfg.Recipe()
		if dm, ok := m.(*nn.Model); ok {
			r = train.TrainedRecipe(cfg, dm)
		}
		rec, meta[train.MetaRecipe] = &r, r.String()
	}
	if err := m.Save(*out, meta); err != nil {
		return err
	}
	sum, err := fileSHA256(*out)
	if err != nil {
		return err
	}
	var derivedArch string
	switch m := m.(type) {
	case *nn.Model:
		derivedArch = m.Spec.Arch
	case *train.Ensemble:
		derivedArch = fmt.Sprintf("ensemble of %d", len(m.Members))
		if len(m.Members) > 0 {
			if first, ok := m.Members[0].(*nn.Model); ok {
				derivedArch += " " + first.Spec.Arch
			}
		}
	}
	r := deriveResult{Model: *out, SHA256: sum, Source: *source, Arch: derivedArch, Dataset: trainSet.Name,
		Split: df.split, Params: params, Recipe: rec, SourceTestAccuracy: srcAcc, Derivation: der}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: %s of %s (%s)", *out, *name, *source, derivedArch)
	switch {
	case *name == train.AttackKnockoff && o.Transfer != nil:
		fmt.Fprintf(&sb, ", %d transfer images of %s", der.Examples, o.Transfer.Name)
	case der.Examples > 0:
		fmt.Fprintf(&sb, ", %d examples of %s/%s", der.Examples, trainSet.Name, df.split)
	}
	if len(params) > 0 {
		keys := make([]string, 0, len(params))
		for k := range params {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&sb, ", %s=%s", k, params[k])
		}
	}
	fmt.Fprintf(&sb, "\n  queries to the source: %d\n  test accuracy %.4f (source %.4f, %+.2f points) in %.0f s\n",
		der.Queries, der.TestAccuracy, srcAcc, 100*(der.TestAccuracy-srcAcc), der.Seconds)
	if rec != nil {
		fmt.Fprintf(&sb, "  recipe %s\n", rec)
	}
	for _, rd := range der.Rounds {
		fmt.Fprintf(&sb, "  round %d: %d examples, %d queries, test accuracy %.4f\n", rd.Round, rd.Examples, rd.Queries, rd.Train.TestAccuracy)
	}
	return e.emit(r, sb.String())
}

// loadTransfer loads Knockoff's transfer set: a dataset by name (MNIST when
// empty and the source classifies Fashion-MNIST), or up to n images drawn at
// random from a folder, resized to the source's input. Its labels are
// meaningless; its class list is the source's.
func loadTransfer(spec, dir string, src nn.Spec, adversary *data.Dataset, n int, seed int64) (*data.Dataset, error) {
	if spec == "" {
		var err error
		if spec, err = experiment.DefaultTransfer(src.Dataset); err != nil {
			return nil, usagef("knockoff: --transfer is required for a %s source (a dataset name or a folder of images)", src.Dataset)
		}
	}
	var d *data.Dataset
	if st, err := os.Stat(spec); err == nil && st.IsDir() {
		d, err = loadImageFolder(spec, n, seed, int(src.C), int(src.H), int(src.W))
		if err != nil {
			return nil, err
		}
	} else if data.CanonicalName(spec) != "" {
		d, err = data.Load(spec, dir, true)
		if err != nil {
			return nil, err
		}
	} else {
		return nil, usagef("--transfer %q is neither a dataset (%s) nor a folder", spec, strings.Join(data.Names(), ", "))
	}
	return experiment.AsTransfer(d, src, adversary.Classes)
}

// loadImageFolder reads up to n image files (PNG, JPEG, GIF) drawn at random
// from the tree under dir, each resized to w×h and converted to c channels
// (1: luminance, 3: RGB).
func loadImageFolder(dir string, n int, seed int64, c, h, w int) (*data.Dataset, error) {
	if c != 1 && c != 3 {
		return nil, fmt.Errorf("image folder: %d channels (want 1 or 3)", c)
	}
	var paths []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".png", ".jpg", ".jpeg", ".gif":
			if !de.IsDir() {
				paths = append(paths, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("image folder %s: no PNG, JPEG or GIF files", dir)
	}
	slices.Sort(paths)
	rand.New(rand.NewPCG(uint64(seed), 0xf01de5)).Shuffle(len(paths), func(i, j int) { paths[i], paths[j] = paths[j], paths[i] })
	if n > 0 && n < len(paths) {
		paths = paths[:n]
	}
	d := &data.Dataset{Name: filepath.Base(filepath.Clean(dir)), Part: "transfer", N: len(paths), C: c, H: h, W: w,
		Images: make([]uint8, len(paths)*c*h*w), Labels: make([]int64, len(paths))}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		img, _, err := image.Decode(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("image folder: %s: %w", p, err)
		}
		draw.BiLinear.Scale(dst, dst.Bounds(), img, img.Bounds(), draw.Src, nil)
		px := d.Image(i)
		for y := range h {
			for x := range w {
				rgba := dst.RGBAAt(x, y)
				if c == 1 {
					px[y*w+x] = color.GrayModel.Convert(rgba).(color.Gray).Y
					continue
				}
				px[y*w+x], px[(h+y)*w+x], px[(2*h+y)*w+x] = rgba.R, rgba.G, rgba.B
			}
		}
	}
	return d, nil
}

// deriveFlags registers on fs the flags of a derive request's attack
// settings, and returns the request they make for attack and arch: a
// setting the command line leaves alone stays zero (or nil), for
// request.Derive to take the attack's default, and a zero given where the
// request reads zero as the default is a usage error. The training flags
// are trainingFlags'.
func deriveFlags(fs *flag.FlagSet) func(attack, arch string) (shared.DeriveArgs, error) {
	defaults, robust := train.DefaultOptions(""), train.RobustDefaults()
	fgm, pgd := train.AdvDefaults(train.AttackFGM), train.AdvDefaults(train.AttackPGD)
	examples := fs.Int("examples", 0, "use the first N examples of the split, 0 for all (default: 10000 for fine-tuning and adversarial training, as in the paper; all otherwise)")
	temperature := fs.Float64("temperature", 0, "Jagielski: distillation parameter T′ (default 2)")
	members := fs.Int("members", defaults.Members, "Ensemble: n surrogates")
	lambda := fs.Float64("lambda", defaults.Lambda, "Noise: weight λ of the uniform noise, in [0,1]")
	rho := fs.Float64("rho", defaults.Rho, "True Labels: fraction ρ of ground-truth labels, in [0,1]")
	fraction := fs.Float64("fraction", defaults.Fraction, "pruning: fraction of each weight tensor set to zero")
	bits := fs.Int("bits", defaults.Bits, "quantization: bits per weight")
	advEps := fs.Float64("adv-eps", 0, fmt.Sprintf("fgm, pgd, pgd-at, trades: radius ε of the adversarial examples (default %g for fgm, %g for pgd, %g L∞ for pgd-at and trades)",
		fgm.Eps, pgd.Eps, robust.Eps))
	advAlpha := fs.Float64("adv-alpha", 0, fmt.Sprintf("pgd, pgd-at, trades: step size α of the adversarial examples (default %g for pgd, %g for pgd-at and trades)",
		pgd.Alpha, robust.Alpha))
	advSteps := fs.Int("adv-steps", 0, fmt.Sprintf("pgd, pgd-at, trades: steps of the adversarial examples (default %d for pgd, %d for pgd-at and trades)",
		pgd.Steps, robust.Steps))
	beta := fs.Float64("beta", robust.Beta, "trades: weight β of the robustness term (0: clean training)")
	steps := fs.String("steps", defaults.Steps, "combined: comma-separated steps of "+strings.Join(train.CombinedSteps(), ", ")+" (distill or retrain only first)")
	return func(attack, arch string) (shared.DeriveArgs, error) {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		// The request reads these zeros as the attack's default: --fraction
		// 0 would prune half the weights.
		if err := positive(set, flagValue{"temperature", *temperature}, flagValue{"members", float64(*members)},
			flagValue{"fraction", *fraction}, flagValue{"bits", float64(*bits)}); err != nil {
			return shared.DeriveArgs{}, err
		}
		switch {
		case set["adv-eps"] && !(*advEps > 0):
			return shared.DeriveArgs{}, usagef("--adv-eps %v: want more than 0", *advEps)
		case set["adv-alpha"] && !(*advAlpha > 0):
			return shared.DeriveArgs{}, usagef("--adv-alpha %v: want more than 0", *advAlpha)
		case set["adv-steps"] && *advSteps <= 0:
			return shared.DeriveArgs{}, usagef("--adv-steps %d: want more than 0", *advSteps)
		case set["steps"] && *steps == "":
			return shared.DeriveArgs{}, usagef("--steps: want a comma-separated list of %s", strings.Join(train.CombinedSteps(), ", "))
		}
		return shared.DeriveArgs{Attack: attack, Arch: arch, Examples: given(set, "examples", *examples), Temperature: pick(set, "temperature", *temperature),
			Members: pick(set, "members", *members), Lambda: given(set, "lambda", *lambda), Rho: given(set, "rho", *rho),
			Fraction: pick(set, "fraction", *fraction), Bits: pick(set, "bits", *bits),
			AdvEps: pick(set, "adv-eps", *advEps), AdvAlpha: pick(set, "adv-alpha", *advAlpha), AdvSteps: pick(set, "adv-steps", *advSteps),
			Beta: given(set, "beta", *beta), Steps: pick(set, "steps", *steps)}, nil
	}
}
