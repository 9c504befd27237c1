package torch

// #include "shim.h"
import "C"

import (
	"math"
	"runtime"
)

// Optimizer updates parameters from their accumulated gradients. It wraps
// libtorch's own optimizers, so updates match PyTorch's.
type Optimizer struct {
	h      C.tch_optim
	params []*Tensor
	lr     float64
}

// SGDOpts configures SGD.
type SGDOpts struct {
	LR, Momentum, Dampening, WeightDecay float64
	Nesterov                             bool
}

// AdamOpts configures Adam; zero Beta1, Beta2 and Eps take PyTorch's
// defaults (0.9, 0.999, 1e-8).
type AdamOpts struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64
	AMSGrad                            bool
}

// NewSGD returns stochastic gradient descent over params.
func NewSGD(params []*Tensor, o SGDOpts) *Optimizer {
	if len(params) == 0 {
		panic(&Error{Op: "sgd", Msg: "no parameters to optimise"})
	}
	hs := handles("sgd", params)
	var h C.tch_optim
	check("sgd", C.tch_sgd(&hs[0], C.int(len(hs)), C.double(o.LR), C.double(o.Momentum), C.double(o.Dampening),
		C.double(o.WeightDecay), cbool(o.Nesterov), &h))
	return newOptimizer(h, params, o.LR)
}

// NewAdam returns Adam over params. Its WeightDecay is an L2 penalty added
// to the gradient (PyTorch's Adam): it passes through the adaptive scaling.
func NewAdam(params []*Tensor, o AdamOpts) *Optimizer {
	return newAdam("adam", params, o)
}

// NewAdamW returns AdamW (Loshchilov and Hutter) over params: Adam with
// decoupled weight decay, each step first shrinking every parameter by
// lr·WeightDecay and then taking Adam's step on the bare gradient
// (PyTorch's AdamW; its default decay is 0.01).
func NewAdamW(params []*Tensor, o AdamOpts) *Optimizer {
	return newAdam("adamw", params, o)
}

func newAdam(kind string, params []*Tensor, o AdamOpts) *Optimizer {
	if o.Beta1 == 0 {
		o.Beta1 = 0.9
	}
	if o.Beta2 == 0 {
		o.Beta2 = 0.999
	}
	if o.Eps == 0 {
		o.Eps = 1e-8
	}
	if len(params) == 0 {
		panic(&Error{Op: kind, Msg: "no parameters to optimise"})
	}
	hs := handles(kind, params)
	var h C.tch_optim
	lr, b1, b2, eps, wd := C.double(o.LR), C.double(o.Beta1), C.double(o.Beta2), C.double(o.Eps), C.double(o.WeightDecay)
	if kind == "adamw" {
		check(kind, C.tch_adamw(&hs[0], C.int(len(hs)), lr, b1, b2, eps, wd, cbool(o.AMSGrad), &h))
	} else {
		check(kind, C.tch_adam(&hs[0], C.int(len(hs)), lr, b1, b2, eps, wd, cbool(o.AMSGrad), &h))
	}
	return newOptimizer(h, params, o.LR)
}

func newOptimizer(h C.tch_optim, params []*Tensor, lr float64) *Optimizer {
	o := &Optimizer{h: h, params: params, lr: lr}
	runtime.SetFinalizer(o, (*Optimizer).Free)
	return o
}

// Step applies one update.
func (o *Optimizer) Step() {
	check("optimizer.step", C.tch_optim_step(o.ptr()))
	runtime.KeepAlive(o)
}

// ZeroGrad drops every parameter's gradient.
func (o *Optimizer) ZeroGrad() {
	check("optimizer.zero_grad", C.tch_optim_zero_grad(o.ptr()))
	runtime.KeepAlive(o)
}

// LR is the current learning rate.
func (o *Optimizer) LR() float64 { return o.lr }

// SetLR changes the learning rate of every parameter group.
func (o *Optimizer) SetLR(lr float64) {
	check("optimizer.set_lr", C.tch_optim_set_lr(o.ptr(), C.double(lr)))
	runtime.KeepAlive(o)
	o.lr = lr
}

// Free releases the optimizer's state (its parameters are not freed).
func (o *Optimizer) Free() {
	if o.h != nil {
		C.tch_optim_free(o.h)
		o.h = nil
	}
}

func (o *Optimizer) ptr() C.tch_optim {
	if o.h == nil {
		panic(&Error{Op: "optimizer", Msg: "use of a freed optimizer"})
	}
	return o.h
}

// Schedule gives the learning rate for a step.
type Schedule interface {
	LR(step int) float64
}

// StepLR multiplies Base by Gamma every Every steps (torch StepLR).
type StepLR struct {
	Base  float64
	Every int
	Gamma float64
}

func (s StepLR) LR(step int) float64 {
	if s.Every <= 0 {
		return s.Base
	}
	return s.Base * math.Pow(s.Gamma, float64(step/s.Every))
}

// CosineLR anneals from Base to Min over Total steps (torch
// CosineAnnealingLR), after an optional linear warm-up.
type CosineLR struct {
	Base, Min     float64
	Total, Warmup int
}

func (s CosineLR) LR(step int) float64 {
	if step < s.Warmup {
		return s.Base * float64(step+1) / float64(s.Warmup)
	}
	if s.Total <= s.Warmup {
		return s.Base
	}
	p := math.Min(1, float64(step-s.Warmup)/float64(s.Total-s.Warmup))
	return s.Min + (s.Base-s.Min)*(1+math.Cos(math.Pi*p))/2
}

// ConstantLR always returns its value.
type ConstantLR float64

func (c ConstantLR) LR(int) float64 { return float64(c) }
