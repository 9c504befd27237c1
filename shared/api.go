package shared

// The HTTP API of `conferral serve`. Every route answers JSON; an error is
// an HTTP status ≥ 400 with an APIError body. IDs are strings: a model's or
// a fingerprint's ID is the sha256 of its file (hex), a job's ID is a
// decimal number.
//
//	GET  /api/models                          []ModelInfo
//	GET  /api/models/{id}                     ModelInfo
//	GET  /api/jobs                            []Job, newest first
//	GET  /api/jobs/{id}                       Job
//	POST /api/jobs                            JobRequest → Job (202)
//	POST /api/jobs/{id}/cancel                Job (cancelling a finished job is a no-op)
//	GET  /api/fingerprints                    []FingerprintInfo
//	GET  /api/fingerprints/{id}               FingerprintDetail
//	GET  /api/fingerprints/{id}/file          the fingerprint file (safetensors)
//	GET  /api/fingerprints/{id}/items/{i}/{original|perturbation|fingerprint}.png
//	                                          upscaled PNG; the perturbation is a heat-map
//	POST /api/verify                          → Job (202) whose Result.Verdict is filled when it completes;
//	                                          the body is either JSON VerifyArgs (a stored model or an
//	                                          endpoint), or multipart/form-data with a part "file" (an ONNX
//	                                          model, at most Health.MaxUpload bytes) and the fields of
//	                                          UploadFields
//	GET  /api/reports                         []ReportInfo
//	GET  /api/reports/{name}/{file}           a report's markdown or PNG file
//	GET  /api/events[?job=ID]                 websocket: a stream of Event (JSON text messages);
//	                                          with job=ID only that job's events, first replaying
//	                                          the ones already recorded
//	GET  /api/health                          Health
//	GET  /api/workers                         []Worker: the processes that run jobs (a fleet's
//	                                          members, or this server alone)
//
// When the server is bound to anything but loopback it requires a token:
// the header "Authorization: Bearer TOKEN", the cookie "conferral_token", or
// the query parameter "token" (the only way for a browser's websocket; the
// server answers a page load with ?token= by setting the cookie).

import "time"

// Worker is a process that runs jobs: a fleet member (`conferral worker`,
// or `conferral serve --database`) or the one server without a fleet.
type Worker struct {
	ID        string     `json:"id"` // the name jobs show in Job.Worker
	Host      string     `json:"host"`
	Device    string     `json:"device"`
	Slots     int        `json:"slots"` // jobs at once; 0 for a server that runs none
	Started   *time.Time `json:"started,omitempty"`
	Heartbeat time.Time  `json:"heartbeat"`
	// Alive is false once the worker has been silent for a lease: its jobs
	// are being taken back.
	Alive bool     `json:"alive"`
	Jobs  []string `json:"jobs"` // the jobs it runs now
}

// APIError is the body of every error answer.
type APIError struct {
	Error string `json:"error"`
}

// Health describes the server.
type Health struct {
	Version   string `json:"version"`
	Device    string `json:"device"`
	Workers   int    `json:"workers"`    // concurrent jobs per device
	MaxUpload int64  `json:"max_upload"` // bytes of an ONNX upload
	// PrivateEndpoints says whether endpoints on loopback, private or
	// link-local addresses are allowed (the operator's --allow-private).
	PrivateEndpoints bool `json:"private_endpoints"`
}

// ModelInfo describes a stored model.
type ModelInfo struct {
	ID      string  `json:"id"` // sha256 of the weights file
	Name    string  `json:"name"`
	Arch    string  `json:"arch"`
	Role    string  `json:"role"` // source, surrogate, reference, twin, derived, uploaded
	Dataset string  `json:"dataset"`
	TestAcc float64 `json:"test_acc"`
	SHA256  string  `json:"sha256"`
	// Derivation is the removal attack that made a derived model, and
	// Parent the ID of the model it was derived from (or trained on the
	// labels of).
	Derivation string    `json:"derivation,omitempty"`
	Parent     string    `json:"parent,omitempty"`
	Job        string    `json:"job,omitempty"` // the job that made it
	Params     int64     `json:"params,omitempty"`
	Created    time.Time `json:"created"`
	// Recipe is how the model was trained, in a training recipe's compact
	// form (train.Recipe's String, as the model file records it); empty
	// for a model that was not trained here (uploads, pruning,
	// quantization) or was trained before recipes were recorded.
	Recipe string `json:"recipe,omitempty"`
}

// Model roles.
const (
	RoleSource    = "source"
	RoleSurrogate = "surrogate"
	RoleReference = "reference"
	// RoleTwin is a reference of the source's own architecture and
	// training recipe, another seed (ExtractArgs.Twins).
	RoleTwin     = "twin"
	RoleDerived  = "derived"
	RoleUploaded = "uploaded"
)

// JobKind is what a job does.
type JobKind string

// Job kinds.
const (
	JobTrain      JobKind = "train"
	JobDerive     JobKind = "derive"
	JobExtract    JobKind = "extract"
	JobVerify     JobKind = "verify"
	JobExperiment JobKind = "experiment"
)

// JobState is where a job is in its life.
type JobState string

// Job states. Completed, Failed, Cancelled and Interrupted are final.
const (
	JobQueued    JobState = "queued"
	JobRunning   JobState = "running"
	JobCompleted JobState = "completed"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
	// JobInterrupted: the server stopped while the job ran and the job was
	// not resumed.
	JobInterrupted JobState = "interrupted"
)

// Final says whether a job in state s will not change any more.
func (s JobState) Final() bool {
	switch s {
	case JobCompleted, JobFailed, JobCancelled, JobInterrupted:
		return true
	}
	return false
}

// Job is a unit of long work run by the server's queue.
type Job struct {
	ID    string     `json:"id"`
	Kind  JobKind    `json:"kind"`
	State JobState   `json:"state"`
	Args  JobRequest `json:"args"`
	// Error says why a job failed, was cancelled or was interrupted, or
	// why its last attempt failed when it is queued for a retry.
	Error    string     `json:"error,omitempty"`
	Result   *JobResult `json:"result,omitempty"`
	Attempt  int        `json:"attempt"` // 1 on the first run, more when retried or resumed
	Created  time.Time  `json:"created"`
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	// Progress is the job's latest progress or epoch event.
	Progress *Event `json:"progress,omitempty"`
	// Worker and Host name the fleet member (River client) and the machine
	// that runs the job, or ran it last.
	Worker string `json:"worker,omitempty"`
	Host   string `json:"host,omitempty"`
}

// JobResult is what a completed job made.
type JobResult struct {
	Models      []ModelInfo      `json:"models,omitempty"`      // train, derive
	Fingerprint *FingerprintInfo `json:"fingerprint,omitempty"` // extract
	Verdict     *Verdict         `json:"verdict,omitempty"`     // verify
	Report      *ReportInfo      `json:"report,omitempty"`      // experiment
	Message     string           `json:"message,omitempty"`     // a line for a person
}

// JobRequest asks for a job: Kind and the matching arguments.
type JobRequest struct {
	Kind       JobKind         `json:"kind"`
	Train      *TrainArgs      `json:"train,omitempty"`
	Derive     *DeriveArgs     `json:"derive,omitempty"`
	Extract    *ExtractArgs    `json:"extract,omitempty"`
	Verify     *VerifyArgs     `json:"verify,omitempty"`
	Experiment *ExperimentArgs `json:"experiment,omitempty"`
}

// DataArgs select a dataset and a split of its training set, as the CLI's
// --data, --split, --split-seed and --limit.
type DataArgs struct {
	Dataset   string `json:"dataset,omitempty"`    // default fashion-mnist
	Split     string `json:"split,omitempty"`      // defender (default), adversary or all
	SplitSeed int64  `json:"split_seed,omitempty"` // default 1
	Limit     int    `json:"limit,omitempty"`      // first N training and test examples, 0 for all
}

// TrainArgs train a model, or a surrogate on a stored teacher's labels.
type TrainArgs struct {
	DataArgs
	Name      string  `json:"name,omitempty"`
	Arch      string  `json:"arch,omitempty"` // default cnn
	Role      string  `json:"role,omitempty"` // default source, or surrogate with a teacher
	Teacher   string  `json:"teacher,omitempty"`
	Epochs    int     `json:"epochs,omitempty"` // default 10
	BatchSize int     `json:"batch_size,omitempty"`
	Optimizer string  `json:"optimizer,omitempty"`
	LR        float64 `json:"lr,omitempty"`
	NoAugment bool    `json:"no_augment,omitempty"`
	Seed      int64   `json:"seed,omitempty"`
	// Momentum and WeightDecay are pointers because zero means something
	// (none): nil takes the recipe's. Schedule is the learning rate's:
	// cosine, step or constant.
	Momentum    *float64 `json:"momentum,omitempty"`
	WeightDecay *float64 `json:"weight_decay,omitempty"`
	Schedule    string   `json:"schedule,omitempty"`
	// Recipe is a training recipe in the CLI's --recipe syntax, e.g.
	// "adamw,lr=0.001,sched=constant,aug=none,bs=64,epochs=3" (default:
	// Conferral's own with 10 epochs). The fields above override it where
	// given, as the CLI's flags override --recipe: an optimizer other than
	// the recipe's brings its customary rate, momentum and decay (unless
	// LR is given), and NoAugment turns augmentation off.
	Recipe string `json:"recipe,omitempty"`
}

// DeriveArgs derive a model from a stored source by a removal attack (the
// CLI's `derive`). Zero values take the attack's defaults.
type DeriveArgs struct {
	DataArgs
	Name   string `json:"name,omitempty"`
	Source string `json:"source"` // model ID
	Attack string `json:"attack"`
	Arch   string `json:"arch,omitempty"`
	// Examples is how many of the split's examples the adversary uses, 0
	// for all: a pointer because nil takes the attack's default (10,000
	// for fine-tuning and adversarial training, all otherwise).
	Examples    *int    `json:"examples,omitempty"`
	Epochs      int     `json:"epochs,omitempty"`
	Seed        int64   `json:"seed,omitempty"`
	Temperature float64 `json:"temperature,omitempty"`
	Transfer    string  `json:"transfer,omitempty"` // Knockoff's transfer dataset
	Members     int     `json:"members,omitempty"`
	// Lambda (Noise's weight of uniform noise) and Rho (True Labels'
	// share of ground truth) are pointers because zero means something
	// (none): nil takes the attack's default.
	Lambda   *float64 `json:"lambda,omitempty"`
	Rho      *float64 `json:"rho,omitempty"`
	Fraction float64  `json:"fraction,omitempty"`
	Bits     int      `json:"bits,omitempty"`
	// AdvEps, AdvAlpha and AdvSteps are the adversarial examples' radius,
	// step and number of steps: of adversarial fine-tuning (fgm takes only
	// the radius; pgd all three) and of the inner maximisation of pgd-at
	// and trades (L∞, ε at most 1). Beta is TRADES' weight of the
	// robustness term, a pointer because zero means something (plain
	// training on clean inputs): nil takes the attack's default. Steps is
	// the combined attack's comma-separated steps, e.g.
	// "distill,finetune,prune,quantize". A setting for an attack that does
	// not use it is refused.
	AdvEps   float64  `json:"adv_eps,omitempty"`
	AdvAlpha float64  `json:"adv_alpha,omitempty"`
	AdvSteps int      `json:"adv_steps,omitempty"`
	Beta     *float64 `json:"beta,omitempty"`
	Steps    string   `json:"steps,omitempty"`
	// Recipe is the training recipe (the CLI's --recipe syntax) of an
	// attack that trains; empty takes the attack's own (fine-tuning: 5
	// epochs at lr 0.01). Epochs and the fields below override it, as in
	// TrainArgs. Pruning and quantization train nothing and take none.
	Recipe      string   `json:"recipe,omitempty"`
	BatchSize   int      `json:"batch_size,omitempty"`
	Optimizer   string   `json:"optimizer,omitempty"`
	LR          float64  `json:"lr,omitempty"`
	Momentum    *float64 `json:"momentum,omitempty"`
	WeightDecay *float64 `json:"weight_decay,omitempty"`
	Schedule    string   `json:"schedule,omitempty"`
	NoAugment   bool     `json:"no_augment,omitempty"`
}

// ExtractArgs craft a fingerprint with C-BIM (or, with Natural, from the
// source's own errors) from stored models. Zero values take
// fingerprint.DefaultConfig's.
type ExtractArgs struct {
	DataArgs
	Name       string   `json:"name,omitempty"`
	Source     string   `json:"source"`     // model ID
	Surrogates []string `json:"surrogates"` // model IDs
	References []string `json:"references"` // model IDs
	// Twins (model IDs) are references of the source's own architecture
	// and training recipe, trained with other seeds: the innocent models
	// most like it. A key must be rare among them as among the references
	// (Confer = Surr·(1 − max(Ref, Twin))); none is the default.
	Twins []string `json:"twins,omitempty"`
	Eps   float64  `json:"eps,omitempty"`
	Alpha float64  `json:"alpha,omitempty"`
	Steps int      `json:"steps,omitempty"`
	// Dropout and Tau are pointers because zero means something (no
	// ensemble dropout; keep every example): nil takes the default.
	Dropout *float64 `json:"dropout,omitempty"`
	Loss    string   `json:"loss,omitempty"` // linear, ce or geometric
	// BestIterate keeps each example's first most conferrable C-BIM iterate.
	BestIterate bool `json:"best_iterate,omitempty"`
	// Shift and Noise are C-BIM's input diversity: each step attacks the
	// ensemble on x′ shifted by up to Shift pixels, with Gaussian noise of
	// standard deviation Noise (0: off).
	Shift int     `json:"shift,omitempty"`
	Noise float64 `json:"noise,omitempty"`
	// Natural makes the candidates natural inputs the source
	// misclassifies, unperturbed, instead of C-BIM's examples.
	Natural bool     `json:"natural,omitempty"`
	Tau     *float64 `json:"tau,omitempty"`
	// TauSurr (τ_S) is the minimal share of the training surrogates that must
	// carry an example's key, on top of τ (0: only τ filters).
	TauSurr    float64 `json:"tau_surr,omitempty"`
	Candidates int     `json:"candidates,omitempty"`
	Batch      int     `json:"batch,omitempty"`
	Seed       int64   `json:"seed,omitempty"`
	// Start is where C-BIM starts: "test" (the default: the dataset's test
	// split, which no model was trained on) or "train" (the request's split).
	Start string `json:"start,omitempty"`
	// Train, when set, trains more surrogates, references and twins as
	// jobs of their own (spread over a fleet's workers) before crafting.
	Train *ExtractTraining `json:"train,omitempty"`
	// Calibration are stored models trained without the source and in no
	// role above: the job calibrates the fingerprint with them (stored
	// beside it), so that its verdicts are calibrated.
	Calibration []string `json:"calibration,omitempty"`
}

// ExtractTraining is the training models an extraction trains for itself:
// surrogates retrained on the source's labels, references on ground truth,
// twins on ground truth with the source's architecture and recorded recipe
// (its epochs included: Archs and Epochs do not apply to them; Limit does,
// and a source trained on all of the split wants twins that are too), each
// with a seed of its own, all on the defender's split; their model IDs join
// the request's. At most 256 models in all.
type ExtractTraining struct {
	Surrogates int      `json:"surrogates"`
	References int      `json:"references"`
	Twins      int      `json:"twins,omitempty"`
	Archs      []string `json:"archs,omitempty"`  // taken in turn [the source's]
	Epochs     int      `json:"epochs,omitempty"` // [train's default]
	Limit      int      `json:"limit,omitempty"`  // images of the split [all]
	// Jobs are the training jobs (surrogates first, twins last) and
	// Gathered says that their models were added; the server sets both.
	Jobs     []string `json:"jobs,omitempty"`
	Gathered bool     `json:"gathered,omitempty"`
}

// VerifyArgs verify one suspect against a stored fingerprint. Exactly one of
// Model, Endpoint and Upload names the suspect.
type VerifyArgs struct {
	Fingerprint string `json:"fingerprint"` // fingerprint ID
	// Model is a stored model's ID.
	Model string `json:"model,omitempty"`
	// Endpoint is a remote prediction endpoint's URL and Protocol how it
	// is spoken to: "kserve" (KServe v2 / Open Inference Protocol),
	// "tfserving" (TensorFlow Serving REST) or "auto" (the default: told
	// from the URL's path, /v2/models/… or /v1/models/…). Loopback, private
	// and link-local addresses are refused unless the operator allows them.
	Endpoint string `json:"endpoint,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	// Upload is set by the server for a multipart upload: the stored ONNX
	// file's sha256 (it may be given again to verify the same upload
	// against another fingerprint). Input is the suspect's input
	// convention: layout, mean, std and scale for an upload, layout and
	// scale for an endpoint.
	Upload string        `json:"upload,omitempty"`
	Input  *UploadFields `json:"input,omitempty"`
	// Theta is the paper's threshold θ on fingerprint accuracy (default
	// 0.7): the rule of an uncalibrated fingerprint. A fingerprint with a
	// calibration (conferral calibrate; stored beside it) is judged by the
	// calibrated test at the false-positive rate FPR (default: the
	// calibration's own). Sequential queries in a random order and stops
	// when Wald's SPRT decides (calibrated fingerprints only).
	Theta      float64 `json:"theta,omitempty"`
	FPR        float64 `json:"fpr,omitempty"`
	Sequential bool    `json:"sequential,omitempty"`
	// The sequential test's settings (with Sequential only; zero: the
	// default): Miss is β, the rate of clearing a model that agrees at
	// DerivedRate (default 0.05); DerivedRate H₁ (default θ, or the
	// calibration models themselves under the empirical test); Batch the
	// fingerprints per query (default 10); OrderSeed the seed of the order
	// they are asked in (default 1; 0 is a seed too).
	Miss        float64 `json:"miss,omitempty"`
	DerivedRate float64 `json:"derived_rate,omitempty"`
	Batch       int     `json:"batch,omitempty"`
	OrderSeed   *int64  `json:"order_seed,omitempty"`
	Name        string  `json:"name,omitempty"` // the suspect's name in the verdict
}

// UploadFields are the form fields of an ONNX upload to POST /api/verify
// besides the part "file": "fingerprint" (required), "name", "theta",
// "fpr", "sequential" (true or false), and the model's input convention
// below.
type UploadFields struct {
	Layout string    `json:"layout,omitempty"` // nchw or nhwc ("": from the file or the endpoint)
	Mean   []float64 `json:"mean,omitempty"`   // form: comma-separated, per channel
	Std    []float64 `json:"std,omitempty"`    // form: comma-separated, per channel
	Scale  float64   `json:"scale,omitempty"`  // multiply pixels in [0,1] by this first (default 1; 255 for 0..255 models)
}

// ExperimentArgs run one of the paper's studies (the CLI's `experiment`).
// Zero values take the CLI's defaults.
type ExperimentArgs struct {
	Study      string    `json:"study"` // conferrability, fingerprint or robustness
	Name       string    `json:"name,omitempty"`
	Dataset    string    `json:"dataset,omitempty"`
	Limit      int       `json:"limit,omitempty"`
	Archs      []string  `json:"archs,omitempty"`
	SourceArch string    `json:"source_arch,omitempty"`
	Per        int       `json:"per,omitempty"`
	Epochs     int       `json:"epochs,omitempty"`
	EpsSweep   []float64 `json:"eps_sweep,omitempty"`
	Taus       []float64 `json:"taus,omitempty"`
	Points     int       `json:"points,omitempty"` // C-BIM start points of every study
	// Focus is the ε of the conferrability study's Table 1 and
	// histogram, and the robustness study's fingerprint ε.
	Focus float64 `json:"focus,omitempty"`
	// Full runs the robustness study's attacks at full strength: budgets
	// of epochs until within 5 points of the source, fine-pruning, PGD-AT,
	// TRADES and the combined attacks (hours on a CPU; robustness only).
	Full bool `json:"full,omitempty"`
	// Fanout trains the study's models as jobs of their own (spread over a
	// fleet's workers: the source first, then all the others at once)
	// before the study runs with them.
	Fanout bool `json:"fanout,omitempty"`
	// Member trains only that model of the study's plan, into the shared
	// folder of trained models, and runs no study: the jobs Fanout queues.
	Member string `json:"member,omitempty"`
	// Jobs are the jobs Fanout queued (the source's first) and Gathered
	// says that they are done; the server sets both.
	Jobs     []string `json:"jobs,omitempty"`
	Gathered bool     `json:"gathered,omitempty"`
}

// FingerprintInfo describes a stored fingerprint.
type FingerprintInfo struct {
	ID         string  `json:"id"` // sha256 of the file
	Name       string  `json:"name"`
	Source     string  `json:"source"` // the source model's sha256
	SourceArch string  `json:"source_arch"`
	Dataset    string  `json:"dataset"`
	Attack     string  `json:"attack"` // how the examples were made: AttackCBIM or AttackNatural
	Eps        float64 `json:"eps"`
	Tau        float64 `json:"tau"`
	TauSurr    float64 `json:"tau_surr,omitempty"` // τ_S
	Loss       string  `json:"loss"`
	Count      int     `json:"count"`      // fingerprints
	Candidates int     `json:"candidates"` // start points attacked
	// ReferenceRate is the highest agreement of a training reference with
	// the keys: it describes the crafting (C-BIM drives it down), not what
	// an innocent model agrees on — a calibration measures that.
	ReferenceRate float64   `json:"reference_rate"`
	Commitment    string    `json:"commitment"`
	Job           string    `json:"job,omitempty"`
	Created       time.Time `json:"created"`
}

// The values of FingerprintInfo.Attack, as fingerprint.Meta.Attack
// records them: C-BIM's conferrable adversarial examples within Eps, or
// natural test inputs the source misclassifies, unperturbed (Eps is 0,
// Loss empty, and each image is its original). A record made before
// fingerprints said is AttackCBIM.
const (
	AttackCBIM    = "cbim"
	AttackNatural = "natural"
)

// Natural says whether f's examples are natural inputs the source
// misclassifies rather than C-BIM's adversarial examples.
func (f FingerprintInfo) Natural() bool { return f.Attack == AttackNatural }

// FingerprintDetail is a fingerprint with its items.
type FingerprintDetail struct {
	FingerprintInfo
	Classes []string `json:"classes"`
	// Models are the stored training surrogates, references and twins
	// that the items' Labels refer to, in order.
	Models []ModelRef        `json:"models"`
	Items  []FingerprintItem `json:"items"`
}

// ModelRef names a model in a FingerprintDetail.
type ModelRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Arch string `json:"arch"`
	Role string `json:"role"` // surrogate, reference or twin
}

// FingerprintItem is one conferrable example.
type FingerprintItem struct {
	Index  int   `json:"index"`
	Label  int64 `json:"label"`  // the original's ground truth
	Target int64 `json:"target"` // the key: the source's label of the fingerprint
	// Conferrability on the training models.
	Conferrability float64 `json:"conferrability"`
	// Labels are each of FingerprintDetail.Models' labels of the
	// fingerprint, and Agree whether each equals Target.
	Labels []int64 `json:"labels"`
	Agree  []bool  `json:"agree"`
}

// The outcomes of a verdict.
const (
	OutcomeDerived      = "derived"
	OutcomeIndependent  = "independent"
	OutcomeInconclusive = "inconclusive"
)

// The tests of a calibrated verdict (Null.Test).
const (
	TestEmpirical = "empirical"     // the share of independent models at or above the suspect
	TestFit       = "beta-binomial" // the fitted tail
)

// Verdict is a verification's answer with the evidence behind it.
type Verdict struct {
	Suspect     string `json:"suspect"`
	Fingerprint string `json:"fingerprint"` // ID
	// Commitment is the fingerprint's commitment, Rule the hash of the
	// decision rule the suspect was judged by.
	Commitment string `json:"commitment"`
	// Signer is the ed25519 public key (hex) that signed the fingerprint's
	// commitment; empty when it is unsigned.
	Signer   string  `json:"signer,omitempty"`
	Rule     string  `json:"rule"`
	N        int     `json:"n"`        // fingerprints answered
	Matches  int     `json:"matches"`  // answers equal to the key
	Accuracy float64 `json:"accuracy"` // fingerprint accuracy, Matches/N
	// Interval is the Clopper–Pearson interval of Accuracy at Confidence.
	Interval   [2]float64 `json:"interval"`
	Confidence float64    `json:"confidence"`
	// Outcome is OutcomeDerived, OutcomeIndependent or
	// OutcomeInconclusive; Surrogate is Outcome == OutcomeDerived.
	Outcome   string `json:"outcome"`
	Surrogate bool   `json:"surrogate"`
	// Verdict says the outcome in words.
	Verdict string  `json:"verdict"`
	Theta   float64 `json:"theta"` // the paper's θ
	// Threshold is the accuracy the decision needs: θ when uncalibrated,
	// the calibrated test's critical accuracy otherwise.
	Threshold float64 `json:"threshold"`
	// Calibrated says the verdict was tested against independent models
	// (Null); an uncalibrated one has no p-value.
	Calibrated bool `json:"calibrated"`
	// PValue is P[X ≥ Matches] under the beta-binomial fit of Null,
	// EmpiricalP the share of Null's models at or above the suspect.
	PValue     *float64    `json:"p_value,omitempty"`
	EmpiricalP *float64    `json:"empirical_p,omitempty"`
	Null       *Null       `json:"null,omitempty"`
	Sequential *Sequential `json:"sequential,omitempty"`
	// Evasion is the calibrated verdict's check for answers chosen to
	// miss the keys (nil where the calibration cannot make it).
	Evasion     *Evasion      `json:"evasion,omitempty"`
	Explanation string        `json:"explanation"`
	Items       []VerdictItem `json:"items"`
	// Queries is the number of images the suspect was sent: N, or more
	// for a remote suspect that had to retry.
	Queries int `json:"queries,omitempty"`
}

// Null is what a calibrated verdict is tested against: independent
// models' agreement with the fingerprint.
type Null struct {
	Models        int      `json:"models"`
	Architectures []string `json:"architectures"`
	// Alpha and Beta are the beta-binomial fit; Mean and SD the agreement
	// rate's across the models.
	Alpha float64 `json:"alpha"`
	Beta  float64 `json:"beta"`
	Mean  float64 `json:"mean"`
	SD    float64 `json:"sd"`
	FPR   float64 `json:"fpr"` // the test's level
	// Test is how the verdict was tested against the null: "empirical"
	// (the share of the models at or above the suspect, exact with enough
	// models) or "beta-binomial" (the fit's tail, with fewer).
	Test      string  `json:"test"`
	Threshold float64 `json:"threshold"` // accuracy that accuses at FPR
	// Calibration is the sha256 of the calibration record.
	Calibration string   `json:"calibration"`
	Warnings    []string `json:"warnings,omitempty"`
}

// Sequential reports a sequential verification (Wald's SPRT).
type Sequential struct {
	Used        int     `json:"used"`         // answers the decision used
	Decision    string  `json:"decision"`     // derived, independent or none (all answers used)
	DerivedRate float64 `json:"derived_rate"` // H₁: this rate, or every rate from it up (Above)
	Above       bool    `json:"above,omitempty"`
	Miss        float64 `json:"miss"` // β
	FPR         float64 `json:"fpr"`  // α
}

// VerdictItem is the suspect's answer to one fingerprint.
type VerdictItem struct {
	Index int   `json:"index"`
	Label int64 `json:"label"` // the suspect's answer
	Key   int64 `json:"key"`
	Agree bool  `json:"agree"`
}

// ReportInfo describes an experiment's report folder.
type ReportInfo struct {
	Name    string    `json:"name"`
	Study   string    `json:"study,omitempty"`
	Files   []string  `json:"files"` // markdown first, then PNGs, then plain text (committed reports)
	Job     string    `json:"job,omitempty"`
	Created time.Time `json:"created"`
}
