// Package attack crafts adversarial examples in pixel space [0,1], NCHW:
// FGSM, BIM (the paper's IGM), PGD, DeepFool and CW-L2 (§2.5–2.6, with the
// parameters of the paper's Table 6 as defaults), and C-BIM, the paper's
// conferrable attack on an ensemble of source, surrogates and references
// (§4.4). Every attack keeps its examples inside the ε-ball around the
// input and inside [0,1].
//
// Attacks panic with *torch.Error on a libtorch failure, like the binding;
// callers wrap them in torch.Catch. Their inputs must belong to a
// torch.Scope: every tensor an attack computes joins that scope.
package attack

import (
	"fmt"

	"github.com/conferral/conferral/backend/torch"
)

// Model maps pixel-space images to logits, in evaluation mode.
type Model interface {
	Forward(x *torch.Tensor) *torch.Tensor
}

// Norm is the distance an ε-ball is measured in.
type Norm int

const (
	// LInf bounds every pixel's change by ε.
	LInf Norm = iota
	// L2 bounds the Euclidean norm of each example's perturbation by ε.
	L2
)

func (n Norm) String() string {
	if n == L2 {
		return "L2"
	}
	return "Linf"
}

// ParseNorm reads "inf"/"linf" or "2"/"l2".
func ParseNorm(s string) (Norm, error) {
	switch s {
	case "inf", "linf", "Linf", "LInf":
		return LInf, nil
	case "2", "l2", "L2":
		return L2, nil
	}
	return LInf, fmt.Errorf("norm %q: want linf or l2", s)
}

// Config holds the parameters the iterative attacks share.
type Config struct {
	Eps   float64 // radius of the ball
	Alpha float64 // step size
	Steps int
	Norm  Norm
	// Targeted attacks move towards Target labels; untargeted ones away from
	// the given labels.
	Targeted bool
}

// inputGrad returns ∂loss(x)/∂x for a fresh leaf copy of x.
func inputGrad(x *torch.Tensor, loss func(x *torch.Tensor) *torch.Tensor) *torch.Tensor {
	xi := x.Detach().SetRequiresGrad(true)
	l := loss(xi)
	return torch.Grads([]*torch.Tensor{l}, []*torch.Tensor{xi})[0]
}

// ceLoss is the summed cross-entropy of m on labels y (sum, so that each
// example's gradient does not shrink with the batch size).
func ceLoss(m Model, y *torch.Tensor) func(x *torch.Tensor) *torch.Tensor {
	return func(x *torch.Tensor) *torch.Tensor { return torch.CrossEntropy(m.Forward(x), y, torch.ReduceSum) }
}

// perExampleNorm returns the L2 norm of each example, shaped (N,1,1,1).
func perExampleNorm(t *torch.Tensor) *torch.Tensor {
	n := t.Size(0)
	return t.Reshape(n, -1).Square().SumDims([]int64{1}, false).AddScalar(1e-12).Sqrt().Reshape(n, 1, 1, 1)
}

// direction is the steepest ascent direction of unit norm: sign(g) for L∞,
// g/‖g‖₂ for L2.
func direction(g *torch.Tensor, n Norm) *torch.Tensor {
	if n == L2 {
		return g.Div(perExampleNorm(g))
	}
	return g.Sign()
}

// Project returns xAdv moved into the ε-ball around x and into [0,1].
func Project(xAdv, x *torch.Tensor, eps float64, n Norm) *torch.Tensor {
	delta := xAdv.Sub(x)
	if n == L2 {
		scale := perExampleNorm(delta).Reciprocal().MulScalar(eps).ClampMax(1)
		delta = delta.Mul(scale)
	} else {
		delta = delta.Clamp(-eps, eps)
	}
	return delta.Add(x).Clamp(0, 1) // delta first: the result joins the iteration's scope
}

// Loop runs steps iterations of f, each in a scope of its own, so that an
// iteration's intermediates are freed when it ends. f receives the current
// iterate (detached, in that scope) and returns the next; the result joins
// x's scope. Every iterative attack here runs through it, and so does any
// inner maximisation elsewhere (TRADES in backend/train).
func Loop(x, start *torch.Tensor, steps int, f func(cur *torch.Tensor) *torch.Tensor) *torch.Tensor {
	cur := start
	for range steps {
		var next *torch.Tensor
		torch.Scoped(func(s *torch.Scope) {
			next = f(s.Add(cur.Detach()))
			torch.Keep(next)
		})
		if cur != start {
			cur.Free()
		}
		cur = next
	}
	if sc := x.Scope(); cur != start && sc != nil {
		sc.Add(cur)
	}
	return cur
}

// step moves x by alpha along the gradient direction of the loss: up for
// untargeted attacks (away from the label), down for targeted ones.
func step(x, g *torch.Tensor, alpha float64, c Config) *torch.Tensor {
	d := direction(g, c.Norm).MulScalar(alpha)
	if c.Targeted {
		return x.Sub(d)
	}
	return x.Add(d)
}

// FGSM is the fast gradient sign method (Goodfellow et al.): one step of
// size ε (a normalised gradient step for L2, the FGM).
func FGSM(m Model, x, y *torch.Tensor, c Config) *torch.Tensor {
	g := inputGrad(x, ceLoss(m, y))
	return Project(step(x, g, c.Eps, c), x, c.Eps, c.Norm)
}

// BIM is the basic iterative method (Kurakin et al.; the paper's IGM):
// Steps steps of size Alpha, each projected onto the ε-ball and [0,1].
// Table 6: 100 steps of 0.01, L∞.
func BIM(m Model, x, y *torch.Tensor, c Config) *torch.Tensor {
	return iterate(m, x, x, y, c)
}

func iterate(m Model, x, start, y *torch.Tensor, c Config) *torch.Tensor {
	return Loop(x, start, c.Steps, func(cur *torch.Tensor) *torch.Tensor {
		return Project(step(cur, inputGrad(cur, ceLoss(m, y)), c.Alpha, c), x, c.Eps, c.Norm)
	})
}

// PGD is projected gradient descent (Madry et al.): BIM from a uniformly
// random start inside the ball. Table 6: 100 steps of 0.01, L2.
func PGD(m Model, x, y *torch.Tensor, c Config) *torch.Tensor {
	noise := torch.Rand(x.Scope(), x.Device(), x.Shape()...).MulScalar(2).SubScalar(1)
	if c.Norm == L2 {
		// A random direction with a random radius in the L2 ball.
		noise = noise.Div(perExampleNorm(noise)).Mul(torch.Rand(x.Scope(), x.Device(), x.Size(0), 1, 1, 1))
	}
	start := Project(x.Add(noise.MulScalar(c.Eps)), x, c.Eps, c.Norm)
	return iterate(m, x, start, y, c)
}

// Labels returns the argmax label m gives each example.
func Labels(m Model, x *torch.Tensor) *torch.Tensor {
	var l *torch.Tensor
	torch.NoGrad(func() { l = m.Forward(x).Argmax(1, false) })
	return l
}
