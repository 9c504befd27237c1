package train

import (
	"github.com/conferral/conferral/backend/data"
)

// Attack names, as `conferral derive --attack` takes them.
const (
	AttackRetraining = "retraining"  // §2.4: hard labels of the source, T = 1
	AttackJagielski  = "jagielski"   // §2.4: soft labels at temperature T′ (eq. 4)
	AttackKnockoff   = "knockoff"    // §2.4: a transfer set from another distribution
	AttackPapernot   = "papernot"    // §2.4: Jacobian-based dataset augmentation
	AttackFTLL       = "ftll"        // §6.3: fine-tune the last layer
	AttackFTAL       = "ftal"        // §6.3: fine-tune all layers
	AttackRTLL       = "rtll"        // §6.3: re-initialise and train the last layer
	AttackRTAL       = "rtal"        // §6.3: re-initialise the last layer, train all
	AttackFGM        = "fgm"         // §6.3: adversarial training with FGM
	AttackPGD        = "pgd"         // §6.3: adversarial training with PGD
	AttackEnsemble   = "ensemble"    // §6.3: n surrogates on disjoint data, average voting
	AttackNoise      = "noise"       // §6.3: uniform noise mixed into the prediction vectors
	AttackTrueLabels = "true-labels" // §6.3: a fraction ρ of ground-truth labels
	AttackPrune      = "prune"       // beyond the paper: magnitude weight pruning
	AttackQuantize   = "quantize"    // beyond the paper: 8-bit weight quantization
)

// Attacks lists every derivation Derive knows, in the order of the paper's
// Tables 4 and 5, then those beyond the paper.
func Attacks() []string {
	return []string{AttackRetraining, AttackJagielski, AttackKnockoff, AttackPapernot,
		AttackFTLL, AttackFTAL, AttackRTLL, AttackRTAL, AttackFGM, AttackPGD,
		AttackEnsemble, AttackNoise, AttackTrueLabels, AttackPrune, AttackQuantize}
}

// FineTuning reports whether attack continues training a copy of the source
// (fine-tuning and adversarial training).
func FineTuning(attack string) bool {
	switch attack {
	case AttackFTLL, AttackFTAL, AttackRTLL, AttackRTAL, AttackFGM, AttackPGD:
		return true
	}
	return false
}

// AttackConfig is the training recipe a derivation uses by default: the
// project's recipe (Defaults) for 10 epochs for the attacks that train a new
// model (10 epochs per round for Papernot), and 5 epochs at a tenth of the
// learning rate for those that continue training the source (fine-tuning and
// adversarial training). The paper states neither.
func AttackConfig(attack string) Config {
	if FineTuning(attack) {
		c := Defaults(5)
		c.LR = 0.01
		return c
	}
	return Defaults(10)
}

// Options are the attack parameters of Derive. DefaultOptions gives the
// paper's values where it states them.
type Options struct {
	// Arch is the surrogate's architecture for the attacks that train a new
	// model ("" means the source's).
	Arch string
	// Temperature is Jagielski's T′.
	Temperature float64
	// Transfer is Knockoff's transfer set (required for Knockoff), and
	// TransferSize how many of its images, drawn at random, the adversary
	// labels (0: as many as the adversary's own data holds, so that both
	// have the same budget; at most the whole transfer set).
	Transfer     *data.Dataset
	TransferSize int
	Papernot     PapernotOpts
	Adv          AdvOpts
	Members      int     // Ensemble: n
	Lambda       float64 // Noise: weight of the uniform noise
	Rho          float64 // True Labels: fraction of ground-truth labels
	Fraction     float64 // pruning: fraction of each weight tensor set to zero
	Bits         int     // quantization: bits per weight
}

// DefaultOptions returns the parameters Derive uses for attack: Jagielski
// T′ = 2 (the paper gives no value), Papernot's own parameters (150 seeds, 6
// rounds, λ = 0.1), adversarial training as AdvDefaults(attack), an Ensemble
// of n = 3 (Table 4), Noise λ = 0.1 and True Labels ρ = 0.1 (within the
// paper's ranges), pruning half of each weight tensor and 8-bit quantization.
func DefaultOptions(attackName string) Options {
	return Options{
		Temperature: 2,
		Papernot:    PapernotDefaults(),
		Adv:         AdvDefaults(attackName),
		Members:     3,
		Lambda:      0.1,
		Rho:         0.1,
		Fraction:    0.5,
		Bits:        8,
	}
}
