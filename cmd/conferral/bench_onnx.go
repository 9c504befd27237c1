package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/onnx"
	"github.com/conferral/conferral/backend/torch"
)

// benchONNXArch is the zoo model exported and imported for the ONNX rows;
// PyTorch's side is torch_bench.py's model of the same name.
const benchONNXArch = "resnet20"

// benchONNXOps are the steps an imported model serves: suspects classify
// (forward) and ONNX sources give C-BIM its input gradients.
func benchONNXOps() []string { return []string{"forward", "input_grad"} }

// benchONNX exports the zoo's ResNet-20 as ONNX, reads it back with
// onnx.Open and times the interpreter on benchGo's forward and
// input-gradient steps. Results are keyed "onnx:resnet20/<op>".
func benchONNX(c, hw int64, batch, warmup, iters int, d torch.Device) (map[string][]float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	zm, err := nn.New(benchSpec(benchONNXArch, c, hw), 1, torch.CPU)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "conferral-bench-")
	if err != nil {
		zm.Free()
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, benchONNXArch+".onnx")
	err = onnx.ExportFile(zm, path, onnx.ExportOptions{})
	zm.Free()
	if err != nil {
		return nil, err
	}
	m, err := onnx.Open(path, onnx.Options{})
	if err != nil {
		return nil, fmt.Errorf("importing the exported %s: %w", benchONNXArch, err)
	}
	defer m.Free()
	if err := m.To(d); err != nil {
		return nil, err
	}
	res := map[string][]float64{}
	err = torch.Catch(func() {
		x, y := benchBatch(batch, c, hw, d)
		defer x.Free()
		defer y.Free()
		forward, inputGrad := inferenceSteps(m, x, y)
		timeSteps(res, "onnx:"+benchONNXArch+"/", map[string]func(){"forward": forward, "input_grad": inputGrad}, benchONNXOps(), warmup, iters)
	})
	if err != nil {
		return nil, fmt.Errorf("timing the imported %s: %w", benchONNXArch, err)
	}
	return res, nil
}

// benchONNXRow is one line of the ONNX table: the imported model's median
// time against PyTorch's on the same step.
type benchONNXRow struct {
	Op                string  `json:"op"`
	GoMs              float64 `json:"go_ms"`
	TorchMs           float64 `json:"torch_ms"`
	ThroughputVsTorch float64 `json:"throughput_vs_torch"`
}

// benchONNXReport renders the ONNX rows from the collected timings.
func benchONNXReport(goRes, pyRes map[string][]float64) ([]benchONNXRow, string) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nImported ONNX: the zoo's %s exported (onnx.ExportFile, as `conferral export` writes it) and read back with onnx.Open (the interpreter on the binding), against the same architecture in PyTorch:\n\n", benchONNXArch)
	fmt.Fprintf(&sb, "| model | step | imported ms | PyTorch ms | imported throughput ÷ PyTorch |\n|---|---|---:|---:|---:|\n")
	var rows []benchONNXRow
	for _, op := range benchONNXOps() {
		g, p := median(goRes["onnx:"+benchONNXArch+"/"+op]), median(pyRes[benchONNXArch+"/"+op])
		if g == 0 || p == 0 {
			fmt.Fprintf(&sb, "| onnx %s | %s | – | – | not measured (add %s to --models) |\n", benchONNXArch, op, benchONNXArch)
			continue
		}
		r := benchONNXRow{Op: op, GoMs: g * 1e3, TorchMs: p * 1e3, ThroughputVsTorch: p / g}
		rows = append(rows, r)
		fmt.Fprintf(&sb, "| onnx %s | %s | %.1f | %.1f | %.2f× |\n", benchONNXArch, op, r.GoMs, r.TorchMs, r.ThroughputVsTorch)
	}
	return rows, sb.String()
}
