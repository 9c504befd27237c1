// Package suspect is the seam of verification: a Suspect labels a batch of
// pixel-space images and nothing else (black-box access, Algorithm 1), so a
// local model file, an uploaded ONNX model and a remote prediction endpoint
// are verified by the same code.
package suspect

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

// Images is a batch of images in pixel space [0,1], NCHW.
type Images struct {
	X          []float32
	N, C, H, W int
}

// Validate checks that the slice holds N·C·H·W values in [0,1].
func (b Images) Validate() error {
	if b.N < 0 || b.C <= 0 || b.H <= 0 || b.W <= 0 || len(b.X) != b.N*b.C*b.H*b.W {
		return fmt.Errorf("images: %d values for shape %dx%dx%dx%d", len(b.X), b.N, b.C, b.H, b.W)
	}
	for i, v := range b.X {
		if !(v >= 0 && v <= 1) {
			return fmt.Errorf("images: value %v at %d is outside [0,1]", v, i)
		}
	}
	return nil
}

// Suspect is a model under suspicion, reachable through its labels only.
type Suspect interface {
	// Classify returns the argmax label of each image.
	Classify(ctx context.Context, b Images) ([]int64, error)
	// String names the suspect for reports.
	String() string
}

// Counter is a suspect that counts the images it was sent (a remote one,
// whose queries may cost money or raise suspicion).
type Counter interface {
	// Queries is the number of images sent so far.
	Queries() int
}

// Model is a local classifier: a zoo model or an imported one.
type Model = nn.Classifier

// Local is a suspect that runs a model in this process.
type Local struct {
	Model Model
	Name  string
	// Batch bounds the images per forward pass (500 when zero).
	Batch int
}

func (l *Local) String() string { return l.Name }

// Classify labels b with the model in evaluation mode.
func (l *Local) Classify(ctx context.Context, b Images) ([]int64, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	if t, ok := l.Model.(interface{ SetTraining(bool) }); ok {
		t.SetTraining(false)
	}
	batch := l.Batch
	if batch <= 0 {
		batch = 500
	}
	per := b.C * b.H * b.W
	batches := func(yield func(torch.Images) bool) {
		for start := 0; start < b.N; start += batch {
			n := min(batch, b.N-start)
			if !yield(torch.Images{X: b.X[start*per : (start+n)*per], N: n, C: b.C, H: b.H, W: b.W}) {
				return
			}
		}
	}
	out := make([]int64, 0, b.N)
	err := torch.Infer(ctx, l.Model.Device(), batches, func(x *torch.Tensor) {
		out = append(out, l.Model.Forward(x).Argmax(1, false).ToDevice(torch.CPU).Int64s()...)
	})
	var te *torch.Error
	switch {
	case errors.As(err, &te):
		return nil, fmt.Errorf("classifying with %s: %w", l.Name, err)
	case err != nil:
		return nil, err // ctx's
	}
	return out, nil
}

// Progress classifies through Suspect in batches of Batch images and calls
// Report after each with the images answered so far, so that long
// verifications (a remote endpoint answering slowly) can be watched.
type Progress struct {
	Suspect
	Batch  int // images per request to Suspect (32 when zero)
	Report func(done, total int)

	sent atomic.Int64
}

// Classify labels b batch by batch.
func (p *Progress) Classify(ctx context.Context, b Images) ([]int64, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	batch := p.Batch
	if batch <= 0 {
		batch = 32
	}
	per := b.C * b.H * b.W
	out := make([]int64, 0, b.N)
	for start := 0; start < b.N; start += batch {
		n := min(batch, b.N-start)
		part := Images{X: b.X[start*per : (start+n)*per], N: n, C: b.C, H: b.H, W: b.W}
		p.sent.Add(int64(n))
		labels, err := p.Suspect.Classify(ctx, part)
		if err != nil {
			return nil, err
		}
		if len(labels) != n {
			return nil, fmt.Errorf("%s: %d answers to %d images", p.Suspect, len(labels), n)
		}
		out = append(out, labels...)
		if p.Report != nil {
			p.Report(len(out), b.N)
		}
	}
	return out, nil
}

// Queries passes on the wrapped suspect's count if it keeps one (a remote
// suspect's retries count), and otherwise counts the images passed on.
func (p *Progress) Queries() int {
	if c, ok := p.Suspect.(Counter); ok {
		return c.Queries()
	}
	return int(p.sent.Load())
}
