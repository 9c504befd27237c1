package onnx

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

// nodeTests is where Debian's libonnx-testdata (in the Makefile's DEPS)
// installs ONNX's backend node tests: one model per directory with
// test_data_set_*/{input,output}_N.pb.
const nodeTests = "/usr/share/libonnx-testdata/data/node"

// conformanceResult is what happened to one node test.
type conformanceResult int

const (
	passed   conformanceResult = iota
	refused                    // the reader or interpreter refused it with an error
	mismatch                   // it ran and computed something else
)

// runNodeTest loads dir/model.onnx and checks every data set in dir. It
// returns the op under test ("" when the model is not one node) and the
// outcome, with the error or mismatch in detail.
func runNodeTest(dir string) (op string, res conformanceResult, detail error) {
	f, err := os.Open(filepath.Join(dir, "model.onnx"))
	if err != nil {
		return "", refused, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", refused, err
	}
	mp, err := readProto(f, st.Size(), 0)
	if err != nil {
		return "", refused, err
	}
	if len(mp.Graph.Node) != 1 {
		return "", refused, fmt.Errorf("%d nodes", len(mp.Graph.Node))
	}
	op = mp.Graph.Node[0].OpType
	opset, err := opsetOf(mp)
	if err != nil {
		return op, refused, err
	}
	g, err := buildGraph(mp.Graph, opset, 0)
	if err != nil {
		return op, refused, err
	}
	defer g.free()
	sets, _ := filepath.Glob(filepath.Join(dir, "test_data_set_*"))
	if len(sets) == 0 {
		return op, refused, fmt.Errorf("no data sets")
	}
	var want []string
	for _, o := range g.outputs {
		want = append(want, o.name)
	}
	for _, set := range sets {
		res, detail = func() (conformanceResult, error) {
			s := torch.NewScope()
			defer s.Close()
			var ins []*torch.Tensor
			for i := range g.inputs {
				t, err := readTensorFile(filepath.Join(set, fmt.Sprintf("input_%d.pb", i)))
				if err != nil {
					return refused, err
				}
				ins = append(ins, s.Add(t))
			}
			var outs []*torch.Tensor
			var runErr error
			torch.NoGrad(func() { outs, runErr = g.run(context.Background(), torch.CPU, ins, want) })
			if runErr != nil {
				return refused, runErr
			}
			for i, got := range outs {
				exp, err := readTensorFile(filepath.Join(set, fmt.Sprintf("output_%d.pb", i)))
				if err != nil {
					return refused, err
				}
				s.Add(exp)
				if !slices.Equal(got.Shape(), exp.Shape()) {
					return mismatch, fmt.Errorf("output %d has shape %v, want %v", i, got.Shape(), exp.Shape())
				}
				if got.Numel() == 0 {
					continue
				}
				g32 := got.To(torch.Float32, torch.CPU).Float32s()
				e32 := exp.To(torch.Float32, torch.CPU).Float32s()
				// ONNX's backend tests compare with rtol 1e-3, atol 1e-7;
				// float32 arithmetic of a different order needs a little
				// more absolute slack.
				if err := allClose(g32, e32, 1e-5, 1e-3); err != nil {
					return mismatch, fmt.Errorf("output %d: %v", i, err)
				}
			}
			return passed, nil
		}()
		if res != passed {
			return op, res, fmt.Errorf("%s: %w", filepath.Base(set), detail)
		}
	}
	return op, passed, nil
}

func readTensorFile(path string) (*torch.Tensor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadTensor(f, 64<<20)
}

// TestConformance runs ONNX's node tests of every supported op, logs how
// many passed per op, and requires that none computes a wrong result (a
// case the interpreter cannot do must be refused with an error naming the
// node) and that every supported op passes at least one test.
func TestConformance(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(nodeTests, "test_*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no ONNX node tests in %s (apt install libonnx-testdata): %v", nodeTests, err)
	}
	supported := map[string]bool{}
	for _, op := range SupportedOps() {
		supported[op] = true
	}
	type tally struct {
		pass, refuse, wrong int
		refusedNames        []string
	}
	byOp := map[string]*tally{}
	for _, op := range SupportedOps() {
		byOp[op] = &tally{}
	}
	for _, dir := range dirs {
		op, res, detail := runNodeTest(dir)
		if !supported[op] {
			continue
		}
		name := filepath.Base(dir)
		tl := byOp[op]
		switch res {
		case passed:
			tl.pass++
		case refused:
			tl.refuse++
			tl.refusedNames = append(tl.refusedNames, name)
			if msg := detail.Error(); !strings.Contains(msg, op) && !strings.Contains(msg, "type") {
				t.Errorf("%s: refused without naming op %s: %v", name, op, detail)
			}
			t.Logf("refused %s: %v", name, detail)
		case mismatch:
			tl.wrong++
			t.Errorf("%s: wrong result: %v", name, detail)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| op | passed | refused | wrong |\n|---|---|---|---|\n")
	total := tally{}
	for _, op := range SupportedOps() {
		tl := byOp[op]
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", op, tl.pass, tl.refuse, tl.wrong)
		total.pass += tl.pass
		total.refuse += tl.refuse
		total.wrong += tl.wrong
		if tl.pass == 0 {
			t.Errorf("op %s passed no node test", op)
		}
	}
	fmt.Fprintf(&b, "| all | %d | %d | %d |\n", total.pass, total.refuse, total.wrong)
	t.Log(b.String())
}
