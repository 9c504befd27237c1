package torch_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

// vectors.json holds PyTorch's results for every op of the binding on fixed
// inputs; testdata/gen_vectors.py writes it (run with /usr/bin/python3).
const vectorsFile = "testdata/vectors.json"

type vecTensor struct {
	Shape []int64       `json:"shape"`
	DType string        `json:"dtype"`
	Data  []json.Number `json:"data"`
}

type vecCase struct {
	Name        string               `json:"name"`
	Op          string               `json:"op"`
	Tol         float64              `json:"tol"`
	Inputs      map[string]vecTensor `json:"inputs"`
	Attrs       attrs                `json:"attrs"`
	Outputs     map[string]vecTensor `json:"outputs"`
	GradWeights map[string]vecTensor `json:"grad_weights"`
	Grads       map[string]vecTensor `json:"grads"`
}

type vecFile struct {
	Torch string    `json:"torch"`
	Cases []vecCase `json:"cases"`
}

func loadVectors(t *testing.T) []vecCase {
	t.Helper()
	raw, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("%v (regenerate with /usr/bin/python3 testdata/gen_vectors.py)", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var f vecFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", vectorsFile, err)
	}
	if len(f.Cases) == 0 {
		t.Fatalf("%s holds no cases", vectorsFile)
	}
	return f.Cases
}

// attrs are a case's hyper-parameters as decoded with UseNumber.
type attrs map[string]any

func (a attrs) has(k string) bool { _, ok := a[k]; return ok }

func (a attrs) get(k string) any {
	v, ok := a[k]
	if !ok {
		panic(fmt.Sprintf("attribute %q missing", k))
	}
	return v
}

func (a attrs) float(k string) float64 {
	f, err := a.get(k).(json.Number).Float64()
	if err != nil {
		panic(fmt.Sprintf("attribute %q: %v", k, err))
	}
	return f
}

func (a attrs) int(k string) int64 {
	n, err := a.get(k).(json.Number).Int64()
	if err != nil {
		panic(fmt.Sprintf("attribute %q: %v", k, err))
	}
	return n
}

func (a attrs) bool(k string) bool { return a.get(k).(bool) }

func (a attrs) str(k string) string { return a.get(k).(string) }

func (a attrs) ints(k string) []int64 {
	vs := a.get(k).([]any)
	out := make([]int64, len(vs))
	for i, v := range vs {
		n, err := v.(json.Number).Int64()
		if err != nil {
			panic(fmt.Sprintf("attribute %q: %v", k, err))
		}
		out[i] = n
	}
	return out
}

func (a attrs) floats(k string) []float64 {
	vs := a.get(k).([]any)
	out := make([]float64, len(vs))
	for i, v := range vs {
		f, err := v.(json.Number).Float64()
		if err != nil {
			panic(fmt.Sprintf("attribute %q: %v", k, err))
		}
		out[i] = f
	}
	return out
}

// pair reads a two-element attribute; a missing one is the zero Pair (the
// binding's default).
func (a attrs) pair(k string) torch.Pair {
	if !a.has(k) {
		return torch.Pair{}
	}
	v := a.ints(k)
	if v[0] == v[1] {
		return torch.P(v[0])
	}
	return torch.Pair{v[0], v[1]}
}

func (a attrs) reduction(k string) torch.Reduction {
	switch r := a.str(k); r {
	case "none":
		return torch.ReduceNone
	case "mean":
		return torch.ReduceMean
	case "sum":
		return torch.ReduceSum
	default:
		panic("unknown reduction " + r)
	}
}

func (a attrs) dtype(k string) torch.DType { return parseDType(a.str(k)) }

func parseDType(s string) torch.DType {
	switch s {
	case "float32":
		return torch.Float32
	case "int64":
		return torch.Int64
	case "bool":
		return torch.Bool
	case "uint8":
		return torch.Uint8
	}
	panic("unknown dtype " + s)
}

// tensor builds v in scope s.
func (v vecTensor) tensor(s *torch.Scope) *torch.Tensor {
	n := int64(1)
	for _, d := range v.Shape {
		n *= d
	}
	if n != int64(len(v.Data)) {
		panic(fmt.Sprintf("shape %v but %d values", v.Shape, len(v.Data)))
	}
	switch parseDType(v.DType) {
	case torch.Float32:
		return torch.FromSlice(s, v.float32s(), v.Shape...)
	case torch.Int64:
		return torch.FromSlice(s, v.int64s(), v.Shape...)
	case torch.Bool:
		xs := v.int64s()
		bs := make([]bool, len(xs))
		for i, x := range xs {
			bs[i] = x != 0
		}
		return torch.FromSlice(s, bs, v.Shape...)
	default:
		xs := v.int64s()
		bs := make([]uint8, len(xs))
		for i, x := range xs {
			bs[i] = uint8(x)
		}
		return torch.FromSlice(s, bs, v.Shape...)
	}
}

func (v vecTensor) float32s() []float32 {
	out := make([]float32, len(v.Data))
	for i, d := range v.Data {
		f, err := strconv.ParseFloat(string(d), 32)
		if err != nil {
			panic(err)
		}
		out[i] = float32(f)
	}
	return out
}

func (v vecTensor) int64s() []int64 {
	out := make([]int64, len(v.Data))
	for i, d := range v.Data {
		n, err := d.Int64()
		if err != nil {
			panic(err)
		}
		out[i] = n
	}
	return out
}

// compare checks a Go tensor against a vector: shape, dtype and values
// (floats within tol, the rest exactly).
func compare(got *torch.Tensor, want vecTensor, tol float64) error {
	if got == nil {
		return fmt.Errorf("nil tensor")
	}
	if !shapeEq(got.Shape(), want.Shape) {
		return fmt.Errorf("shape %v, want %v", got.Shape(), want.Shape)
	}
	dt := parseDType(want.DType)
	if got.DType() != dt {
		return fmt.Errorf("dtype %v, want %v", got.DType(), dt)
	}
	var g []int64
	switch dt {
	case torch.Float32:
		return allClose(got.Float32s(), want.float32s(), tol)
	case torch.Int64:
		g = got.Int64s()
	case torch.Bool:
		for _, b := range torch.Data[bool](got) {
			g = append(g, map[bool]int64{false: 0, true: 1}[b])
		}
	case torch.Uint8:
		for _, b := range torch.Data[uint8](got) {
			g = append(g, int64(b))
		}
	}
	w := want.int64s()
	for i := range w {
		if g[i] != w[i] {
			return fmt.Errorf("element %d: got %d, want %d (got %v)", i, g[i], w[i], g)
		}
	}
	return nil
}

// in is a case's inputs; a missing name is a nil tensor (an absent optional
// operand).
type in map[string]*torch.Tensor

type outs map[string]*torch.Tensor

type dispatchFn func(s *torch.Scope, x in, a attrs) outs

func out1(t *torch.Tensor) outs { return outs{"out": t} }

func unary(f func(*torch.Tensor) *torch.Tensor) dispatchFn {
	return func(_ *torch.Scope, x in, _ attrs) outs { return out1(f(x["x"])) }
}

func binary(f func(a, b *torch.Tensor) *torch.Tensor) dispatchFn {
	return func(_ *torch.Scope, x in, _ attrs) outs { return out1(f(x["a"], x["b"])) }
}

func scalar(f func(*torch.Tensor, float64) *torch.Tensor) dispatchFn {
	return func(_ *torch.Scope, x in, a attrs) outs { return out1(f(x["x"], a.float("s"))) }
}

func reduceDims(f func(*torch.Tensor, []int64, bool) *torch.Tensor) dispatchFn {
	return func(_ *torch.Scope, x in, a attrs) outs { return out1(f(x["x"], a.ints("dims"), a.bool("keep"))) }
}

func reduceDim(f func(*torch.Tensor, int64, bool) *torch.Tensor) dispatchFn {
	return func(_ *torch.Scope, x in, a attrs) outs { return out1(f(x["x"], a.int("dim"), a.bool("keep"))) }
}

func softmaxLike(f func(*torch.Tensor, int64) *torch.Tensor) dispatchFn {
	return func(_ *torch.Scope, x in, a attrs) outs { return out1(f(x["x"], a.int("dim"))) }
}

// optimCase replays the generator's optimizer sequence: parameters w and b,
// loss mean((X·w + b − Y)²) + 0.1·Σw⁴, steps of zero_grad/backward/step.
func optimCase(kind string) dispatchFn {
	return func(s *torch.Scope, x in, a attrs) outs {
		w := x["w"].SetRequiresGrad(true)
		b := x["b"].SetRequiresGrad(true)
		var opt *torch.Optimizer
		if kind == "sgd" {
			opt = torch.NewSGD([]*torch.Tensor{w, b}, torch.SGDOpts{
				LR: a.float("lr"), Momentum: a.float("momentum"), Dampening: a.float("dampening"),
				WeightDecay: a.float("weight_decay"), Nesterov: a.bool("nesterov"),
			})
		} else {
			opt = torch.NewAdam([]*torch.Tensor{w, b}, torch.AdamOpts{
				LR: a.float("lr"), Beta1: a.float("beta1"), Beta2: a.float("beta2"), Eps: a.float("eps"),
				WeightDecay: a.float("weight_decay"), AMSGrad: a.bool("amsgrad"),
			})
		}
		defer opt.Free()
		res := outs{}
		for step := 1; step <= int(a.int("steps")); step++ {
			if a.has("lrs") {
				opt.SetLR(a.floats("lrs")[step-1])
			}
			opt.ZeroGrad()
			loss := x["X"].MatMul(w).Add(b).Sub(x["Y"]).Square().Mean().
				Add(w.PowScalar(4).Sum().MulScalar(0.1))
			loss.Backward()
			opt.Step()
			res[fmt.Sprintf("loss%d", step)] = loss.Detach()
			res[fmt.Sprintf("w%d", step)] = w.Detach().Clone()
			res[fmt.Sprintf("b%d", step)] = b.Detach().Clone()
		}
		return res
	}
}

func poolOpts(a attrs) torch.PoolOpts {
	o := torch.PoolOpts{
		Kernel:   a.pair("kernel"),
		Stride:   a.pair("stride"),
		Padding:  a.pair("padding"),
		Dilation: a.pair("dilation"),
		CeilMode: a.bool("ceil_mode"),
	}
	if a.has("count_include_pad") {
		o.ExcludePad = !a.bool("count_include_pad")
	}
	return o
}

func convOpts(a attrs) torch.ConvOpts {
	return torch.ConvOpts{
		Stride:        a.pair("stride"),
		Padding:       a.pair("padding"),
		Dilation:      a.pair("dilation"),
		OutputPadding: a.pair("output_padding"),
		Groups:        a.int("groups"),
	}
}

// dispatch maps every op of vectors.json onto the binding. A case whose op
// is missing here fails TestVectors, and an entry no case uses fails
// TestVectorsCoverEveryDispatcher.
var dispatch = map[string]dispatchFn{
	// Unary.
	"relu":        unary((*torch.Tensor).Relu),
	"relu6":       unary((*torch.Tensor).Relu6),
	"sigmoid":     unary((*torch.Tensor).Sigmoid),
	"tanh":        unary((*torch.Tensor).Tanh),
	"exp":         unary((*torch.Tensor).Exp),
	"log":         unary((*torch.Tensor).Log),
	"neg":         unary((*torch.Tensor).Neg),
	"abs":         unary((*torch.Tensor).Abs),
	"sign":        unary((*torch.Tensor).Sign),
	"sqrt":        unary((*torch.Tensor).Sqrt),
	"detach":      unary((*torch.Tensor).Detach),
	"contiguous":  unary((*torch.Tensor).Contiguous),
	"clone":       unary((*torch.Tensor).Clone),
	"square":      unary((*torch.Tensor).Square),
	"hardswish":   unary((*torch.Tensor).HardSwish),
	"hardsigmoid": unary((*torch.Tensor).HardSigmoid),
	"floor":       unary((*torch.Tensor).Floor),
	"round":       unary((*torch.Tensor).Round),
	"log1p":       unary((*torch.Tensor).Log1p),
	"reciprocal":  unary((*torch.Tensor).Reciprocal),
	"permute_contiguous": unary(func(x *torch.Tensor) *torch.Tensor {
		return x.Permute(1, 0).Contiguous()
	}),

	// Binary, broadcasting.
	"add":     binary((*torch.Tensor).Add),
	"sub":     binary((*torch.Tensor).Sub),
	"mul":     binary((*torch.Tensor).Mul),
	"div":     binary((*torch.Tensor).Div),
	"matmul":  binary((*torch.Tensor).MatMul),
	"maximum": binary((*torch.Tensor).Maximum),
	"minimum": binary((*torch.Tensor).Minimum),
	"pow":     binary((*torch.Tensor).Pow),
	"eq":      binary((*torch.Tensor).Eq),
	"gt":      binary((*torch.Tensor).Gt),
	"lt":      binary((*torch.Tensor).Lt),
	"ge":      binary((*torch.Tensor).Ge),
	"le":      binary((*torch.Tensor).Le),
	"ne":      binary((*torch.Tensor).Ne),

	// Tensor–scalar.
	"add_scalar":  scalar((*torch.Tensor).AddScalar),
	"sub_scalar":  scalar((*torch.Tensor).SubScalar),
	"mul_scalar":  scalar((*torch.Tensor).MulScalar),
	"div_scalar":  scalar((*torch.Tensor).DivScalar),
	"pow_scalar":  scalar((*torch.Tensor).PowScalar),
	"eq_scalar":   scalar((*torch.Tensor).EqScalar),
	"gt_scalar":   scalar((*torch.Tensor).GtScalar),
	"lt_scalar":   scalar((*torch.Tensor).LtScalar),
	"ge_scalar":   scalar((*torch.Tensor).GeScalar),
	"le_scalar":   scalar((*torch.Tensor).LeScalar),
	"rsub_scalar": scalar((*torch.Tensor).RSubScalar),
	"leaky_relu":  scalar((*torch.Tensor).LeakyRelu),

	// Reductions.
	"sum":       unary((*torch.Tensor).Sum),
	"mean":      unary((*torch.Tensor).Mean),
	"sum_dims":  reduceDims((*torch.Tensor).SumDims),
	"mean_dims": reduceDims((*torch.Tensor).MeanDims),
	"amax":      reduceDims((*torch.Tensor).Amax),
	"amin":      reduceDims((*torch.Tensor).Amin),
	"logsumexp": reduceDims((*torch.Tensor).LogSumExp),
	"argmax":    reduceDim((*torch.Tensor).Argmax),
	"argmin":    reduceDim((*torch.Tensor).Argmin),

	// Clamp, where.
	"clamp": func(_ *torch.Scope, x in, a attrs) outs {
		return out1(x["x"].Clamp(a.float("lo"), a.float("hi")))
	},
	"clamp_min": func(_ *torch.Scope, x in, a attrs) outs { return out1(x["x"].ClampMin(a.float("lo"))) },
	"clamp_max": func(_ *torch.Scope, x in, a attrs) outs { return out1(x["x"].ClampMax(a.float("hi"))) },
	"clamp_tensor": func(_ *torch.Scope, x in, _ attrs) outs {
		return out1(x["x"].ClampTensor(x["lo"], x["hi"]))
	},
	"where": func(_ *torch.Scope, x in, _ attrs) outs { return out1(torch.Where(x["cond"], x["a"], x["b"])) },

	// Shapes and indexing.
	"reshape": func(_ *torch.Scope, x in, a attrs) outs { return out1(x["x"].Reshape(a.ints("shape")...)) },
	"flatten": unary((*torch.Tensor).Flatten),
	"permute": func(_ *torch.Scope, x in, a attrs) outs { return out1(x["x"].Permute(a.ints("dims")...)) },
	"expand":  func(_ *torch.Scope, x in, a attrs) outs { return out1(x["x"].Expand(a.ints("shape")...)) },
	"narrow": func(_ *torch.Scope, x in, a attrs) outs {
		return out1(x["x"].Narrow(a.int("dim"), a.int("start"), a.int("length")))
	},
	"index_select": func(_ *torch.Scope, x in, a attrs) outs {
		return out1(x["x"].IndexSelect(a.int("dim"), x["index"]))
	},
	"gather": func(_ *torch.Scope, x in, a attrs) outs { return out1(x["x"].Gather(a.int("dim"), x["index"])) },
	"cat": func(_ *torch.Scope, x in, a attrs) outs {
		var ts []*torch.Tensor
		for i := 0; x[fmt.Sprint("x", i)] != nil; i++ {
			ts = append(ts, x[fmt.Sprint("x", i)])
		}
		return out1(torch.Cat(ts, a.int("dim")))
	},
	"one_hot": func(_ *torch.Scope, x in, a attrs) outs { return out1(x["x"].OneHot(a.int("classes"))) },
	"topk": func(_ *torch.Scope, x in, a attrs) outs {
		v, i := x["x"].TopK(a.int("k"), a.int("dim"))
		return outs{"values": v, "indices": i}
	},

	// Neural-network functions.
	"conv2d": func(_ *torch.Scope, x in, a attrs) outs {
		return out1(torch.Conv2d(x["x"], x["w"], x["b"], convOpts(a)))
	},
	"conv_transpose2d": func(_ *torch.Scope, x in, a attrs) outs {
		return out1(torch.ConvTranspose2d(x["x"], x["w"], x["b"], convOpts(a)))
	},
	"batch_norm": func(_ *torch.Scope, x in, a attrs) outs {
		o := outs{"out": torch.BatchNorm(x["x"], x["w"], x["b"], x["running_mean"], x["running_var"],
			a.bool("training"), a.float("momentum"), a.float("eps"))}
		// The running statistics are updated in place.
		if x["running_mean"] != nil {
			o["running_mean"] = x["running_mean"]
			o["running_var"] = x["running_var"]
		}
		return o
	},
	"linear":              func(_ *torch.Scope, x in, _ attrs) outs { return out1(torch.Linear(x["x"], x["w"], x["b"])) },
	"max_pool2d":          func(_ *torch.Scope, x in, a attrs) outs { return out1(torch.MaxPool2d(x["x"], poolOpts(a))) },
	"avg_pool2d":          func(_ *torch.Scope, x in, a attrs) outs { return out1(torch.AvgPool2d(x["x"], poolOpts(a))) },
	"adaptive_avg_pool2d": func(_ *torch.Scope, x in, a attrs) outs { return out1(torch.AdaptiveAvgPool2d(x["x"], a.pair("size"))) },
	"dropout": func(_ *torch.Scope, x in, a attrs) outs {
		if a.has("seed") {
			torch.ManualSeed(uint64(a.int("seed")))
		}
		return out1(torch.Dropout(x["x"], a.float("p"), a.bool("training")))
	},
	"softmax":     softmaxLike((*torch.Tensor).Softmax),
	"log_softmax": softmaxLike((*torch.Tensor).LogSoftmax),
	"cross_entropy": func(_ *torch.Scope, x in, a attrs) outs {
		return out1(torch.CrossEntropy(x["logits"], x["target"], a.reduction("reduction")))
	},
	"kl_div": func(_ *torch.Scope, x in, a attrs) outs {
		return out1(torch.KLDiv(x["logp"], x["target"], a.reduction("reduction"), a.bool("log_target")))
	},
	"pad": func(_ *torch.Scope, x in, a attrs) outs {
		mode := map[string]torch.PadMode{
			"constant": torch.PadConstant, "reflect": torch.PadReflect, "replicate": torch.PadReplicate,
		}[a.str("mode")]
		return out1(torch.Pad(x["x"], a.ints("pad"), mode, a.float("value")))
	},

	// Conversions and factories.
	"to": func(_ *torch.Scope, x in, a attrs) outs { return out1(x["x"].To(a.dtype("dtype"), torch.CPU)) },
	"full": func(s *torch.Scope, _ in, a attrs) outs {
		return out1(torch.Full(s, a.ints("shape"), a.float("value"), a.dtype("dtype"), torch.CPU))
	},
	"zeros": func(s *torch.Scope, _ in, a attrs) outs { return out1(torch.Zeros(s, torch.CPU, a.ints("shape")...)) },
	"ones":  func(s *torch.Scope, _ in, a attrs) outs { return out1(torch.Ones(s, torch.CPU, a.ints("shape")...)) },
	"rand": func(s *torch.Scope, _ in, a attrs) outs {
		torch.ManualSeed(uint64(a.int("seed")))
		return out1(torch.Rand(s, torch.CPU, a.ints("shape")...))
	},
	"randn": func(s *torch.Scope, _ in, a attrs) outs {
		torch.ManualSeed(uint64(a.int("seed")))
		return out1(torch.RandN(s, torch.CPU, a.ints("shape")...))
	},

	// Optimizers: three steps each, parameters compared after every step.
	"sgd":  optimCase("sgd"),
	"adam": optimCase("adam"),
}

const defaultTol = 1e-5

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// runCase runs one vector case and reports every mismatch on t.
func runCase(t *testing.T, c vecCase) {
	fn, ok := dispatch[c.Op]
	if !ok {
		t.Fatalf("no Go dispatcher for op %q: add one to dispatch in vectors_test.go", c.Op)
	}
	if len(c.Outputs) == 0 {
		t.Fatalf("case has no outputs")
	}
	tol := c.Tol
	if tol == 0 {
		tol = defaultTol
	}
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	s := torch.NewScope()
	defer s.Close()

	x := in{}
	for _, k := range sortedKeys(c.Inputs) {
		x[k] = c.Inputs[k].tensor(s)
	}
	for k := range c.Grads {
		if x[k] == nil {
			t.Fatalf("gradient for unknown input %q", k)
		}
		x[k].SetRequiresGrad(true)
	}
	got := fn(s, x, c.Attrs)
	for _, k := range sortedKeys(c.Outputs) {
		if err := compare(got[k], c.Outputs[k], tol); err != nil {
			t.Errorf("output %q: %v", k, err)
		}
	}
	for k := range got {
		if _, ok := c.Outputs[k]; !ok {
			t.Errorf("dispatcher returned output %q that the vector does not have", k)
		}
	}
	if len(c.Grads) == 0 {
		return
	}
	if len(c.GradWeights) == 0 {
		t.Fatalf("case has gradients but no grad_weights")
	}
	// loss = Σ_o sum(out_o ⊙ W_o); compare d loss / d input with PyTorch's.
	var loss *torch.Tensor
	for _, k := range sortedKeys(c.GradWeights) {
		term := got[k].Mul(c.GradWeights[k].tensor(s)).Sum()
		if loss == nil {
			loss = term
		} else {
			loss = loss.Add(term)
		}
	}
	names := sortedKeys(c.Grads)
	inputs := make([]*torch.Tensor, len(names))
	for i, k := range names {
		inputs[i] = x[k]
	}
	grads := torch.Grads([]*torch.Tensor{loss}, inputs)
	for i, k := range names {
		g := grads[i]
		if g == nil { // unused input: PyTorch's vector holds zeros
			g = torch.Zeros(s, torch.CPU, x[k].Shape()...)
		}
		if err := compare(g, c.Grads[k], tol); err != nil {
			t.Errorf("gradient w.r.t. %q: %v", k, err)
		}
	}
}

func TestVectors(t *testing.T) {
	cases := loadVectors(t)
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.Name] {
			t.Errorf("duplicate case name %q", c.Name)
		}
		seen[c.Name] = true
		t.Run(c.Name, func(t *testing.T) { runCase(t, c) })
	}
}

// TestVectorsCoverEveryDispatcher fails when an op loses its last vector,
// so coverage cannot shrink silently from the generator's side either.
func TestVectorsCoverEveryDispatcher(t *testing.T) {
	used := map[string]int{}
	for _, c := range loadVectors(t) {
		used[c.Op]++
	}
	for _, op := range sortedKeys(dispatch) {
		if used[op] == 0 {
			t.Errorf("dispatcher %q has no case in %s", op, vectorsFile)
		}
	}
	if testing.Verbose() {
		for _, op := range sortedKeys(used) {
			t.Logf("%-22s %d cases", op, used[op])
		}
	}
}

// TestVectorsCoverOpsAPI fails when ops.go exports a function or method that
// no dispatcher in this file calls: a new op needs a vector.
func TestVectorsCoverOpsAPI(t *testing.T) {
	src, err := os.ReadFile("vectors_test.go")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "ops.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || !fd.Name.IsExported() {
			continue
		}
		n++
		re := regexp.MustCompile(`[.(]` + fd.Name.Name + `\b`)
		if !re.Match(src) {
			t.Errorf("ops.go exports %s, which no vector dispatcher exercises", fd.Name.Name)
		}
	}
	if n < 50 {
		t.Errorf("found only %d exported functions in ops.go", n)
	}
}
