// Package torch is Conferral's cgo binding to libtorch: tensors, autograd,
// the functional ops that models, losses and attacks need, and optimizers.
//
// Memory. libtorch's memory is invisible to Go's garbage collector, so
// tensors are freed deterministically: a Scope owns every tensor created
// through it or computed from a tensor it owns, and Close frees them all at
// once (wrap each training step, attack iteration and request in one). A
// result computed from tensors of several scopes joins the innermost of
// them, the one opened last, whatever the order of the operands. Keep
// moves a tensor out of its scope so it outlives it; Free releases one tensor
// now. A finalizer is only a backstop.
//
// Randomness. Rand, RandN and Dropout draw from the calling OS thread's
// Generator when it has one (Seeded, WithGenerator, SetGenerator) and from
// libtorch's global generators (ManualSeed) otherwise, so a job that holds
// its thread and draws from a Generator of its own reproduces its seed
// while other jobs run.
//
// Errors. A failing op panics with an *Error that carries libtorch's
// message; Catch turns that panic back into an error at an API boundary, the
// way encoding/json recovers its internal panics. Other panics pass through.
package torch

/*
#cgo CXXFLAGS: -std=c++17 -I/usr/include/torch/csrc/api/include -O2 -Wno-deprecated-declarations
#cgo LDFLAGS: -ltorch -ltorch_cpu -lc10 -lstdc++
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Error is a failure reported by libtorch (or by the binding's own checks).
type Error struct {
	Op  string
	Msg string
}

func (e *Error) Error() string { return "torch: " + e.Op + ": " + e.Msg }

// check turns a shim result into a panic carrying an *Error.
func check(op string, msg *C.char) {
	if msg == nil {
		return
	}
	s := C.GoString(msg)
	C.free(unsafe.Pointer(msg))
	// libtorch messages can span lines; the first ones say what went wrong.
	panic(&Error{Op: op, Msg: strings.TrimSpace(s)})
}

// Catch runs f and returns the *Error it panicked with, if any. Panics of
// any other kind are re-raised.
func Catch(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			var te *Error
			if e, ok := r.(error); ok && errors.As(e, &te) {
				err = te
				return
			}
			panic(r)
		}
	}()
	f()
	return nil
}

// DType is a tensor element type.
type DType int

const (
	Float32 DType = C.TCH_FLOAT32
	Int64   DType = C.TCH_INT64
	Bool    DType = C.TCH_BOOL
	Uint8   DType = C.TCH_UINT8
)

func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Int64:
		return "int64"
	case Bool:
		return "bool"
	case Uint8:
		return "uint8"
	}
	return "dtype(" + strconv.Itoa(int(d)) + ")"
}

func (d DType) size() int {
	switch d {
	case Float32:
		return 4
	case Int64:
		return 8
	}
	return 1
}

// Device is where a tensor lives: CPU, or a CUDA device by index.
type Device int

// CPU is the host device.
const CPU Device = -1

// CUDA returns the CUDA device with the given index.
func CUDA(index int) Device { return Device(index) }

// IsCUDA reports whether d is a CUDA device.
func (d Device) IsCUDA() bool { return d >= 0 }

func (d Device) String() string {
	if d == CPU {
		return "cpu"
	}
	return "cuda:" + strconv.Itoa(int(d))
}

func (d Device) c() (kind, index C.int) {
	if d == CPU {
		return 0, 0
	}
	return 1, C.int(d)
}

// CUDADeviceCount is the number of CUDA devices libtorch can use (0 for a
// CPU-only build such as Debian's).
func CUDADeviceCount() int {
	var n C.int
	if err := Catch(func() { check("cuda_device_count", C.tch_cuda_device_count(&n)) }); err != nil {
		return 0
	}
	return int(n)
}

// ParseDevice reads "auto", "cpu", "cuda" or "cuda:N". "auto" picks the
// first CUDA device when there is one.
func ParseDevice(s string) (Device, error) {
	switch s {
	case "", "auto":
		if CUDADeviceCount() > 0 {
			return CUDA(0), nil
		}
		return CPU, nil
	case "cpu":
		return CPU, nil
	case "cuda":
		s = "cuda:0"
	}
	idx, ok := strings.CutPrefix(s, "cuda:")
	if !ok {
		return CPU, fmt.Errorf("device %q: want auto, cpu, cuda or cuda:N", s)
	}
	n, err := strconv.Atoi(idx)
	if err != nil || n < 0 {
		return CPU, fmt.Errorf("device %q: bad CUDA index", s)
	}
	if n >= CUDADeviceCount() {
		return CPU, fmt.Errorf("device %q: this libtorch sees %d CUDA devices (a CPU-only build sees none)", s, CUDADeviceCount())
	}
	return CUDA(n), nil
}

// SetNumThreads sets libtorch's intra-op thread count (1 by default in
// Debian's build).
func SetNumThreads(n int) {
	if n > 0 {
		check("set_num_threads", C.tch_set_num_threads(C.int(n))) // inside the shim's exception guard
	}
}

// NumThreads returns libtorch's intra-op thread count.
func NumThreads() int { return int(C.tch_get_num_threads()) }

// ManualSeed seeds libtorch's global random generators (dropout, Rand,
// RandN), which every thread without a Generator of its own draws from: two
// jobs that run at once interleave their draws from them, so neither
// reproduces its seed. A job gives itself a Generator (Seeded) instead.
func ManualSeed(seed uint64) { check("manual_seed", C.tch_manual_seed(C.uint64_t(seed))) }

// Generator is a job's own source of libtorch randomness: one generator per
// device, each seeded with the Generator's seed, as ManualSeed seeds the
// global ones. Torch work that runs with it (WithGenerator, SetGenerator)
// draws Rand, RandN and Dropout's masks from it alone, so the same seed
// draws the same numbers whatever other jobs do meanwhile; on the CPU they
// are the numbers that the global generators draw after ManualSeed(seed).
type Generator struct{ h C.tch_generator }

// NewGenerator returns a Generator seeded with seed. Free releases it; a
// finalizer is only a backstop.
func NewGenerator(seed uint64) *Generator {
	g := &Generator{}
	check("generator", C.tch_generator_new(C.uint64_t(seed), &g.h))
	runtime.SetFinalizer(g, (*Generator).Free)
	return g
}

// Free releases g; a thread that still draws from it keeps it alive until
// its SetGenerator is undone.
func (g *Generator) Free() {
	if g != nil && g.h != nil {
		C.tch_generator_free(g.h)
		g.h = nil
	}
}

// SetGenerator makes g (nil: libtorch's global generators) the source of
// randomness of torch work on the calling OS thread, and returns the
// function that restores the previous source. Like libtorch's grad mode
// the source is per OS thread: the caller must hold its thread
// (runtime.LockOSThread) until it has called restore, and torch work on
// other goroutines draws from their threads' sources.
func SetGenerator(g *Generator) (restore func()) {
	var h C.tch_generator
	if g != nil {
		if g.h == nil {
			panic(&Error{Op: "generator", Msg: "use of a freed generator"})
		}
		h = g.h
	}
	prev := C.tch_swap_generator(h)
	runtime.KeepAlive(g)
	return func() {
		C.tch_generator_free(C.tch_swap_generator(prev))
		C.tch_generator_free(prev)
	}
}

// WithGenerator runs f locked to its OS thread with g as the source of its
// torch randomness (SetGenerator), restoring the previous source after.
func WithGenerator(g *Generator, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer SetGenerator(g)()
	f()
}

// Seeded runs f with a new Generator seeded with seed (WithGenerator): the
// way a job makes its randomness its own.
func Seeded(seed uint64, f func()) {
	g := NewGenerator(seed)
	defer g.Free()
	WithGenerator(g, f)
}

// NoGrad runs f with autograd recording off, as torch.no_grad() does. Grad
// mode is per OS thread in libtorch, so f runs locked to its thread; torch
// work that f starts on other goroutines records gradients as usual.
func NoGrad(f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	prev := C.tch_grad_enabled()
	C.tch_set_grad_enabled(0)
	defer C.tch_set_grad_enabled(prev)
	f()
}

// Tensor is a handle to a libtorch tensor.
type Tensor struct {
	h     C.tch_tensor
	scope *Scope
}

// Scope owns tensors and frees them together. The zero value is not usable;
// call NewScope. A Scope may be shared by goroutines.
type Scope struct {
	mu  sync.Mutex
	ts  []*Tensor
	seq uint64 // when it was opened: a scope opened later has a larger one
}

// scopes numbers the scopes in the order they are opened.
var scopes atomic.Uint64

// NewScope returns an empty scope.
func NewScope() *Scope { return &Scope{seq: scopes.Add(1)} }

// Close frees every tensor the scope still owns.
func (s *Scope) Close() {
	s.mu.Lock()
	ts := s.ts
	s.ts = nil
	s.mu.Unlock()
	for _, t := range ts {
		if t.scope == s {
			t.release()
		}
	}
}

// Len is the number of tensors the scope holds (freed or kept ones included
// until Close).
func (s *Scope) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ts)
}

// Keep moves tensors out of their scope: the caller now owns them.
func Keep(ts ...*Tensor) {
	for _, t := range ts {
		if t != nil {
			t.scope = nil
		}
	}
}

// Add moves t into s (out of any other scope) and returns it, so that
// everything computed from t is owned by s too.
func (s *Scope) Add(t *Tensor) *Tensor {
	if t != nil && t.scope != s {
		t.scope = s
		s.add(t)
	}
	return t
}

// Scoped runs f with a fresh scope and closes it afterwards.
func Scoped(f func(s *Scope)) {
	s := NewScope()
	defer s.Close()
	f(s)
}

func (s *Scope) add(t *Tensor) {
	s.mu.Lock()
	s.ts = append(s.ts, t)
	s.mu.Unlock()
}

// newTensor wraps a handle, owned by s (or by the caller when s is nil).
func newTensor(s *Scope, h C.tch_tensor) *Tensor {
	if h == nil {
		return nil
	}
	t := &Tensor{h: h, scope: s}
	if s != nil {
		s.add(t)
	}
	runtime.SetFinalizer(t, (*Tensor).release)
	return t
}

// scopeOf is the scope a result joins: the innermost among its operands'
// scopes, the one opened last, so that a temporary computed from a step's
// tensor and a longer-lived one is freed with the step whatever the order
// of the operands; nil (the caller's) when no operand has a scope. An
// operand's scope is live: closing a scope frees the tensors it owns.
func scopeOf(ts ...*Tensor) *Scope {
	var s *Scope
	for _, t := range ts {
		if t != nil && t.scope != nil && (s == nil || t.scope.seq > s.seq) {
			s = t.scope
		}
	}
	return s
}

func (t *Tensor) release() {
	if t.h != nil {
		C.tch_free(t.h)
		t.h = nil
	}
}

// Free releases the tensor now. Using it afterwards panics with an *Error.
func (t *Tensor) Free() {
	if t != nil {
		t.release()
	}
}

// Scope returns the scope that owns t, or nil.
func (t *Tensor) Scope() *Scope { return t.scope }

func (t *Tensor) ptr(op string) C.tch_tensor {
	if t == nil {
		return nil
	}
	if t.h == nil {
		panic(&Error{Op: op, Msg: "use of a freed tensor"})
	}
	return t.h
}

// handles converts tensors into a C array kept alive by the caller.
func handles(op string, ts []*Tensor) []C.tch_tensor {
	hs := make([]C.tch_tensor, len(ts))
	for i, t := range ts {
		if t == nil {
			panic(&Error{Op: op, Msg: fmt.Sprintf("nil tensor at position %d", i)})
		}
		hs[i] = t.ptr(op)
	}
	return hs
}

func cints(xs []int64) (*C.int64_t, C.int) {
	if len(xs) == 0 {
		return nil, 0
	}
	return (*C.int64_t)(unsafe.Pointer(&xs[0])), C.int(len(xs))
}

// Element is a Go type that maps onto a tensor dtype.
type Element interface {
	~float32 | ~int64 | ~uint8 | ~bool
}

func dtypeOf[E Element]() DType {
	var e E
	switch any(e).(type) {
	case float32:
		return Float32
	case int64:
		return Int64
	case uint8:
		return Uint8
	case bool:
		return Bool
	}
	panic("unreachable")
}

// FromSlice copies data into a new CPU tensor of the given shape, owned by s
// (nil: by the caller).
func FromSlice[E Element](s *Scope, data []E, shape ...int64) *Tensor {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	if n != int64(len(data)) {
		panic(&Error{Op: "from_slice", Msg: fmt.Sprintf("shape %v holds %d elements, data has %d", shape, n, len(data))})
	}
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	sh, nd := cints(shape)
	kind, idx := CPU.c()
	var h C.tch_tensor
	check("from_slice", C.tch_from_data(p, sh, nd, C.int(dtypeOf[E]()), kind, idx, &h))
	runtime.KeepAlive(data)
	return newTensor(s, h)
}

// Data copies a tensor's elements into a new Go slice. E must match the
// tensor's dtype.
func Data[E Element](t *Tensor) []E {
	if want := dtypeOf[E](); t.DType() != want {
		panic(&Error{Op: "data", Msg: fmt.Sprintf("tensor is %v, asked for %v", t.DType(), want)})
	}
	out := make([]E, t.Numel())
	var p unsafe.Pointer
	if len(out) > 0 {
		p = unsafe.Pointer(&out[0])
	}
	check("data", C.tch_copy_data(t.ptr("data"), p, C.int64_t(len(out)*dtypeOf[E]().size())))
	runtime.KeepAlive(t)
	return out
}

// Float32s copies a float32 tensor into a Go slice.
func (t *Tensor) Float32s() []float32 { return Data[float32](t) }

// Int64s copies an int64 tensor into a Go slice.
func (t *Tensor) Int64s() []int64 { return Data[int64](t) }

// Item returns the value of a one-element tensor.
func (t *Tensor) Item() float64 {
	var v C.double
	check("item", C.tch_item(t.ptr("item"), &v))
	runtime.KeepAlive(t)
	return float64(v)
}

// Shape returns the tensor's sizes.
func (t *Tensor) Shape() []int64 {
	var buf [16]int64
	var nd C.int
	check("shape", C.tch_shape(t.ptr("shape"), (*C.int64_t)(unsafe.Pointer(&buf[0])), 16, &nd))
	runtime.KeepAlive(t)
	if int(nd) > len(buf) {
		panic(&Error{Op: "shape", Msg: "more than 16 dimensions"})
	}
	return append([]int64(nil), buf[:nd]...)
}

// Dim returns the number of dimensions.
func (t *Tensor) Dim() int { return len(t.Shape()) }

// Size returns the size of dimension d (negative counts from the end).
func (t *Tensor) Size(d int) int64 {
	s := t.Shape()
	if d < 0 {
		d += len(s)
	}
	return s[d]
}

// Numel returns the number of elements.
func (t *Tensor) Numel() int64 {
	n := int64(1)
	for _, d := range t.Shape() {
		n *= d
	}
	return n
}

type info struct {
	dtype        DType
	device       Device
	requiresGrad bool
}

func (t *Tensor) info() info {
	var dt, kind, idx, rg, def C.int
	check("info", C.tch_info(t.ptr("info"), &dt, &kind, &idx, &rg, &def))
	runtime.KeepAlive(t)
	d := CPU
	if kind == 1 {
		d = CUDA(int(idx))
	}
	return info{dtype: DType(dt), device: d, requiresGrad: rg != 0}
}

// DType returns the element type.
func (t *Tensor) DType() DType { return t.info().dtype }

// Device returns where the tensor lives.
func (t *Tensor) Device() Device { return t.info().device }

// RequiresGrad reports whether autograd records operations on t.
func (t *Tensor) RequiresGrad() bool { return t.info().requiresGrad }

// String describes the tensor without its data.
func (t *Tensor) String() string {
	if t == nil || t.h == nil {
		return "Tensor(freed)"
	}
	i := t.info()
	return fmt.Sprintf("Tensor(%v, %v, %v)", t.Shape(), i.dtype, i.device)
}

// Full returns a tensor of the given shape filled with v.
func Full(s *Scope, shape []int64, v float64, dt DType, d Device) *Tensor {
	sh, nd := cints(shape)
	kind, idx := d.c()
	var h C.tch_tensor
	check("full", C.tch_full(sh, nd, C.double(v), C.int(dt), kind, idx, &h))
	return newTensor(s, h)
}

// Zeros returns a float32 tensor of zeros.
func Zeros(s *Scope, d Device, shape ...int64) *Tensor { return Full(s, shape, 0, Float32, d) }

// Ones returns a float32 tensor of ones.
func Ones(s *Scope, d Device, shape ...int64) *Tensor { return Full(s, shape, 1, Float32, d) }

// Rand returns uniform [0,1) samples from the thread's generator
// (SetGenerator; libtorch's global one by default).
func Rand(s *Scope, d Device, shape ...int64) *Tensor {
	sh, nd := cints(shape)
	kind, idx := d.c()
	var h C.tch_tensor
	check("rand", C.tch_rand(sh, nd, 0, kind, idx, &h))
	return newTensor(s, h)
}

// RandN returns standard normal samples from the thread's generator
// (SetGenerator; libtorch's global one by default).
func RandN(s *Scope, d Device, shape ...int64) *Tensor {
	sh, nd := cints(shape)
	kind, idx := d.c()
	var h C.tch_tensor
	check("randn", C.tch_rand(sh, nd, 1, kind, idx, &h))
	return newTensor(s, h)
}

// To returns t converted to dtype dt on device d.
func (t *Tensor) To(dt DType, d Device) *Tensor {
	kind, idx := d.c()
	var h C.tch_tensor
	check("to", C.tch_to(t.ptr("to"), C.int(dt), kind, idx, &h))
	return newTensor(t.scope, h)
}

// ToDevice returns t on device d, same dtype.
func (t *Tensor) ToDevice(d Device) *Tensor { return t.To(t.DType(), d) }

// CopyFrom copies src's values into t in place, without recording gradients.
func (t *Tensor) CopyFrom(src *Tensor) {
	check("copy_", C.tch_copy_(t.ptr("copy_"), src.ptr("copy_")))
	runtime.KeepAlive(t)
	runtime.KeepAlive(src)
}

// SetRequiresGrad turns gradient recording for a leaf tensor on or off and
// returns t.
func (t *Tensor) SetRequiresGrad(on bool) *Tensor {
	b := C.int(0)
	if on {
		b = 1
	}
	check("requires_grad_", C.tch_set_requires_grad(t.ptr("requires_grad_"), b))
	runtime.KeepAlive(t)
	return t
}

// Grad returns the accumulated gradient of a leaf tensor (nil if none), as a
// new handle owned by s.
func (t *Tensor) Grad(s *Scope) *Tensor {
	var h C.tch_tensor
	check("grad", C.tch_grad(t.ptr("grad"), &h))
	runtime.KeepAlive(t)
	return newTensor(s, h)
}

// ZeroGrad drops t's accumulated gradient.
func (t *Tensor) ZeroGrad() {
	check("zero_grad", C.tch_zero_grad(t.ptr("zero_grad")))
	runtime.KeepAlive(t)
}

// Backward accumulates the gradient of the scalar t into every leaf that
// requires it.
func (t *Tensor) Backward() {
	check("backward", C.tch_backward(t.ptr("backward")))
	runtime.KeepAlive(t)
}

// Grads returns d(sum of outputs)/d(inputs) without touching any .grad
// (torch.autograd.grad). An input that outputs do not depend on gets nil.
func Grads(outputs, inputs []*Tensor) []*Tensor {
	if len(outputs) == 0 || len(inputs) == 0 {
		panic(&Error{Op: "autograd_grad", Msg: "needs at least one output and one input"})
	}
	outs := handles("autograd_grad", outputs)
	ins := handles("autograd_grad", inputs)
	gs := make([]C.tch_tensor, len(inputs))
	check("autograd_grad", C.tch_autograd_grad(&outs[0], C.int(len(outs)), &ins[0], C.int(len(ins)), &gs[0]))
	runtime.KeepAlive(outputs)
	runtime.KeepAlive(inputs)
	s := scopeOf(append(append([]*Tensor{}, outputs...), inputs...)...)
	res := make([]*Tensor, len(gs))
	for i, h := range gs {
		res[i] = newTensor(s, h)
	}
	return res
}
