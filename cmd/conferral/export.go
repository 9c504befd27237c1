package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/onnx"
	"github.com/conferral/conferral/backend/torch"
)

type exportResult struct {
	Model  string `json:"model"`
	Out    string `json:"out"`
	Arch   string `json:"arch"`
	Opset  int64  `json:"opset"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// runExport writes a zoo model as ONNX.
func runExport(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	apply := common(fs, e)
	model := fs.String("model", "", "model file (safetensors, as train writes it); required")
	out := fs.String("out", "", "ONNX file to write; required")
	opset := fs.Int64("opset", onnx.DefaultExportOpset, fmt.Sprintf("ONNX opset, %d to %d", onnx.MinExportOpset, onnx.MaxExportOpset))
	if err := parse(fs, args); err != nil {
		return err
	}
	if *model == "" {
		return usagef("--model is required")
	}
	if *out == "" {
		return usagef("--out is required")
	}
	if *opset < onnx.MinExportOpset || *opset > onnx.MaxExportOpset {
		return usagef("--opset %d: want %d to %d", *opset, onnx.MinExportOpset, onnx.MaxExportOpset)
	}
	if err := apply(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The weights are copied into the file from host memory: load on the CPU
	// whatever --device says.
	m, _, err := nn.Load(*model, torch.CPU)
	if err != nil {
		return err
	}
	defer m.Free()
	sum, err := fileSHA256(*model)
	if err != nil {
		return err
	}
	extra := map[string]string{"conferral.source_sha256": sum}
	if err := onnx.ExportFile(m, *out, onnx.ExportOptions{Opset: *opset, Metadata: extra}); err != nil {
		return err
	}
	st, err := os.Stat(*out)
	if err != nil {
		return err
	}
	osum, err := fileSHA256(*out)
	if err != nil {
		return err
	}
	r := exportResult{Model: *model, Out: *out, Arch: m.Spec.Arch, Opset: *opset, Bytes: st.Size(), SHA256: osum}
	return e.emit(r, fmt.Sprintf("wrote %s: %s of %s, opset %d, %d bytes, sha256 %s\n"+
		"input: pixel-space NCHW images in [0,1], shape (N, %d, %d, %d), normalisation inside the graph; output: logits of %d classes\n",
		*out, m.Spec.Arch, m.Spec.Dataset, *opset, st.Size(), osum, m.Spec.C, m.Spec.H, m.Spec.W, len(m.Spec.Classes)))
}
