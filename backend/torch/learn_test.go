package torch_test

import (
	"math/rand/v2"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

// quadrants makes n 1×8×8 images of 4 classes: class k is brighter in
// quadrant k, under heavy noise. Linearly separable after pooling.
func quadrants(r *rand.Rand, n int) ([]float32, []int64) {
	x := make([]float32, n*64)
	y := make([]int64, n)
	for i := range n {
		k := r.IntN(4)
		y[i] = int64(k)
		qy, qx := k/2, k%2
		for row := range 8 {
			for col := range 8 {
				v := r.NormFloat64() * 0.7
				if row/4 == qy && col/4 == qx {
					v += 0.8
				}
				x[i*64+row*8+col] = float32(v)
			}
		}
	}
	return x, y
}

// TestMustLearn trains a tiny conv model built from the raw ops with SGD
// (momentum, a step schedule through SetLR) and requires the loss to fall
// and held-out accuracy to pass 0.9.
func TestMustLearn(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const nTrain, nTest, batch = 512, 256, 32
	xTrain, yTrain := quadrants(r, nTrain)
	xTest, yTest := quadrants(r, nTest)

	torch.ManualSeed(5)
	params := torch.NewScope() // parameters live for the whole test
	defer params.Close()
	convW := torch.RandN(params, torch.CPU, 4, 1, 3, 3).MulScalar(0.3).Detach().SetRequiresGrad(true)
	convB := torch.Zeros(params, torch.CPU, 4).SetRequiresGrad(true)
	linW := torch.RandN(params, torch.CPU, 4, 16).MulScalar(0.25).Detach().SetRequiresGrad(true)
	linB := torch.Zeros(params, torch.CPU, 4).SetRequiresGrad(true)
	opt := torch.NewSGD([]*torch.Tensor{convW, convB, linW, linB}, torch.SGDOpts{LR: 0.1, Momentum: 0.9})
	defer opt.Free()
	sched := torch.StepLR{Base: 0.1, Every: 150, Gamma: 0.3}

	forward := func(x *torch.Tensor) *torch.Tensor {
		h := torch.Conv2d(x, convW, convB, torch.ConvOpts{Padding: torch.P(1)}).Relu()
		h = torch.AdaptiveAvgPool2d(h, torch.P(2)).Flatten()
		return torch.Linear(h, linW, linB)
	}
	evaluate := func(x []float32, y []int64) (loss, acc float64) {
		torch.NoGrad(func() {
			torch.Scoped(func(s *torch.Scope) {
				n := int64(len(y))
				logits := forward(torch.FromSlice(s, x, n, 1, 8, 8))
				labels := torch.FromSlice(s, y, n)
				loss = torch.CrossEntropy(logits, labels, torch.ReduceMean).Item()
				acc = logits.Argmax(1, false).Eq(labels).Sum().Item() / float64(n)
			})
		})
		return loss, acc
	}

	loss0, acc0 := evaluate(xTrain, yTrain)
	const steps = 400
	for step := range steps {
		opt.SetLR(sched.LR(step))
		i := (step * batch) % nTrain
		torch.Scoped(func(s *torch.Scope) {
			x := torch.FromSlice(s, xTrain[i*64:(i+batch)*64], batch, 1, 8, 8)
			y := torch.FromSlice(s, yTrain[i:i+batch], batch)
			loss := torch.CrossEntropy(forward(x), y, torch.ReduceMean)
			opt.ZeroGrad()
			loss.Backward()
			opt.Step()
		})
	}
	loss1, acc1 := evaluate(xTrain, yTrain)
	testLoss, testAcc := evaluate(xTest, yTest)
	t.Logf("train loss %.3f → %.3f, train accuracy %.3f → %.3f; test loss %.3f, accuracy %.3f; final lr %g",
		loss0, loss1, acc0, acc1, testLoss, testAcc, opt.LR())
	if params.Len() == 0 || convW.Scope() != params {
		t.Errorf("parameters left their scope")
	}
	if !(loss1 < 0.5*loss0) {
		t.Errorf("training loss fell only from %.3f to %.3f", loss0, loss1)
	}
	if testAcc <= 0.9 {
		t.Errorf("held-out accuracy %.3f, want > 0.9", testAcc)
	}
}
