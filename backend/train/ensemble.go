package train

// The Ensemble attack of §6.3: n surrogates on disjoint parts of the
// adversary's data, deployed as one model with average voting, and the
// file format that stores them as one.

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/torch"
)

// Ensemble is several models deployed as one with average voting: its
// prediction vector is the mean of the members' softmax outputs (§6.3).
type Ensemble struct {
	Members []Classifier
}

// Probs returns the mean of the members' softmax outputs, (N, K).
func (e *Ensemble) Probs(x *torch.Tensor) *torch.Tensor { return e.Forward(x).Exp() }

// Forward returns the logarithm of the mean of the members' softmax outputs:
// logits whose softmax (and exp) is the ensemble's prediction vector, and
// whose argmax is the average vote. Computed as a log-sum-exp of the
// members' log-softmax, so that it stays finite and differentiable.
func (e *Ensemble) Forward(x *torch.Tensor) *torch.Tensor {
	if len(e.Members) == 0 {
		panic(&torch.Error{Op: "ensemble", Msg: "no members"})
	}
	parts := make([]*torch.Tensor, len(e.Members))
	for i, m := range e.Members {
		lp := m.Forward(x).LogSoftmax(1)
		parts[i] = lp.Reshape(append([]int64{1}, lp.Shape()...)...)
	}
	return torch.Cat(parts, 0).LogSumExp([]int64{0}, false).SubScalar(math.Log(float64(len(e.Members))))
}

// Device is where the first member lives.
func (e *Ensemble) Device() torch.Device {
	if len(e.Members) == 0 {
		return torch.CPU
	}
	return e.Members[0].Device()
}

// SetTraining switches every member's mode.
func (e *Ensemble) SetTraining(on bool) {
	for _, m := range e.Members {
		if t, ok := m.(interface{ SetTraining(bool) }); ok {
			t.SetTraining(on)
		}
	}
}

// Free releases the members that can be freed.
func (e *Ensemble) Free() {
	for _, m := range e.Members {
		if f, ok := m.(interface{ Free() }); ok {
			f.Free()
		}
	}
}

// Metadata of an ensemble file.
const (
	metaFormat     = "conferral.format"
	ensembleFormat = "conferral-ensemble/1"
)

// Save writes the ensemble as one safetensors file: member i's variables
// under "member<i>." and its model metadata under "member<i>/", with extra
// in the file's own metadata. Every member must be a zoo model. Atomic.
func (e *Ensemble) Save(path string, extra map[string]string) error {
	f := &safetensors.File{Metadata: map[string]string{}}
	for k, v := range extra {
		f.Metadata[k] = v
	}
	for i, c := range e.Members {
		m, ok := c.(*nn.Model)
		if !ok {
			return fmt.Errorf("ensemble: member %d is a %T, only zoo models can be saved", i, c)
		}
		mf, err := m.File(nil)
		if err != nil {
			return fmt.Errorf("ensemble: member %d: %w", i, err)
		}
		for k, v := range mf.Metadata {
			f.Metadata[fmt.Sprintf("member%d/%s", i, k)] = v
		}
		for _, t := range mf.Tensors {
			t.Name = fmt.Sprintf("member%d.%s", i, t.Name)
			f.Tensors = append(f.Tensors, t)
		}
	}
	f.Metadata[metaFormat] = ensembleFormat
	f.Metadata["members"] = strconv.Itoa(len(e.Members))
	return safetensors.WriteFile(path, f)
}

// LoadDeployed reads a model file written by nn.Model.Save or an ensemble
// file written by Ensemble.Save onto device d.
func LoadDeployed(path string, d torch.Device) (Deployed, map[string]string, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("loading %s: %w", path, err)
	}
	if f.Metadata[metaFormat] != ensembleFormat {
		m, err := nn.FromFile(f, d)
		if err != nil {
			return nil, nil, fmt.Errorf("loading model %s: %w", path, err)
		}
		return m, f.Metadata, nil
	}
	n, err := strconv.Atoi(f.Metadata["members"])
	if err != nil || n <= 0 {
		return nil, nil, fmt.Errorf("loading ensemble %s: bad member count %q", path, f.Metadata["members"])
	}
	e := &Ensemble{}
	for i := range n {
		mf := &safetensors.File{Metadata: map[string]string{}}
		mp, tp := fmt.Sprintf("member%d/", i), fmt.Sprintf("member%d.", i)
		for k, v := range f.Metadata {
			if rest, ok := strings.CutPrefix(k, mp); ok {
				mf.Metadata[rest] = v
			}
		}
		for _, t := range f.Tensors {
			if rest, ok := strings.CutPrefix(t.Name, tp); ok {
				t.Name = rest
				mf.Tensors = append(mf.Tensors, t)
			}
		}
		m, err := nn.FromFile(mf, d)
		if err != nil {
			e.Free()
			return nil, nil, fmt.Errorf("loading ensemble %s: member %d: %w", path, i, err)
		}
		e.Members = append(e.Members, m)
	}
	meta := map[string]string{}
	for k, v := range f.Metadata {
		if !strings.HasPrefix(k, "member") || k == "members" {
			meta[k] = v
		}
	}
	return e, meta, nil
}

// TrainEnsemble derives the Ensemble attack's model (§6.3): d is labelled by
// the source, split at random into n disjoint parts of (nearly) equal size,
// and member i, a new model of spec initialised from cfg.Seed+i, is trained
// on part i by Retraining. Queries: d.Len(). On error the members built so
// far are freed.
func TrainEnsemble(ctx context.Context, source Classifier, spec nn.Spec, dev torch.Device, d *data.Dataset, n int, cfg Config) (*Ensemble, *Derivation, error) {
	if n <= 0 || n > d.Len() {
		return nil, nil, fmt.Errorf("ensemble: %d members for %d examples", n, d.Len())
	}
	base := cmp.Or(cfg.Stage, fmt.Sprintf("ensemble n=%d %s", n, spec.Arch))
	logf(cfg, base, "labelling %d examples with the source", d.Len())
	labels, err := Predict(ctx, source, d)
	if err != nil {
		return nil, nil, fmt.Errorf("ensemble: labelling with the source: %w", err)
	}
	perm := permutation(d.Len(), cfg.Seed)
	e := &Ensemble{}
	der := &Derivation{Attack: AttackEnsemble, Queries: int64(d.Len()), Examples: d.Len()}
	for i := range n {
		part := perm[i*len(perm)/n : (i+1)*len(perm)/n]
		sort.Ints(part)
		sub := d.Subset(part)
		for j, k := range part {
			sub.Labels[j] = labels[k]
		}
		m, err := nn.New(spec, uint64(cfg.Seed+int64(i)), dev)
		if err != nil {
			e.Free()
			return nil, der, fmt.Errorf("ensemble member %d: %w", i+1, err)
		}
		e.Members = append(e.Members, m)
		c := cfg
		c.Labels, c.Seed, c.Stage = nil, cfg.Seed+int64(i), fmt.Sprintf("%s member %d/%d", base, i+1, n)
		res, err := Train(ctx, m, sub, c)
		der.Members = append(der.Members, res)
		der.Train = res
		if err != nil {
			e.Free()
			return nil, der, fmt.Errorf("ensemble member %d: %w", i+1, err)
		}
	}
	return e, der, nil
}
