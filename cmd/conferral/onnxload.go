package main

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/onnx"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/train"
)

// onnxFlags say how an imported ONNX model takes its input when the file
// does not say (or to override what it says): --layout, --scale, --mean
// and --std; and --onnx-memory, the budget of its memory estimate. A flag another part of the command already defines (verify's
// remote suspects take --layout and --scale too) is shared, not redefined;
// only flags given on the command line override the file.
type onnxFlags struct{ fs *flag.FlagSet }

func (o *onnxFlags) register(fs *flag.FlagSet) {
	o.fs = fs
	def := func(name, usage string) {
		if fs.Lookup(name) == nil {
			fs.String(name, "", usage)
		}
	}
	def("layout", "input layout of .onnx models, nchw or nhwc (default: from the file)")
	def("scale", "factor from [0,1] pixels to an .onnx model's range, e.g. 255 (default: from the file, else 1)")
	def("mean", "per-channel mean subtracted from scaled pixels for .onnx models, comma-separated (default: from the file, else 0)")
	def("std", "per-channel std dividing scaled pixels for .onnx models, comma-separated (default: from the file, else 1)")
	onnxMemoryFlag(fs)
}

func (o *onnxFlags) options() (onnx.Options, error) {
	opt := onnx.Options{MaxMemory: int64(*onnxMemoryFlag(o.fs))}
	var err error
	o.fs.Visit(func(f *flag.Flag) {
		if err != nil {
			return
		}
		v := f.Value.String()
		switch f.Name {
		case "layout":
			switch l := strings.ToLower(v); l {
			case "auto", "":
			case "nchw", "nhwc":
				opt.Layout = l
			default:
				err = usagef("--layout %q: want nchw or nhwc", v)
			}
		case "scale":
			s, perr := strconv.ParseFloat(v, 32)
			if perr != nil || s <= 0 {
				err = usagef("--scale %q: want a positive number", v)
			}
			opt.Scale = float32(s)
		case "mean", "std":
			fl, perr := onnx.ParseFloats(v)
			if perr != nil {
				err = usagef("--%s: %v", f.Name, perr)
			}
			if f.Name == "mean" {
				opt.Mean = fl
			} else {
				opt.Std = fl
			}
		}
	})
	return opt, err
}

// budgetHint says how to load a model that the importer's memory budget
// refused, if the operator trusts it.
func budgetHint(err error) error {
	if errors.Is(err, onnx.ErrOverBudget) {
		return fmt.Errorf("%w; --onnx-memory raises the budget for a model you trust", err)
	}
	return err
}

func isONNX(path string) bool {
	return strings.EqualFold(filepath.Ext(strings.TrimSpace(path)), ".onnx")
}

// openONNX imports an ONNX model onto the run's device.
func openONNX(e *env, path string, of *onnxFlags) (*onnx.Model, error) {
	opt, err := of.options()
	if err != nil {
		return nil, err
	}
	m, err := onnx.Open(strings.TrimSpace(path), opt)
	if err != nil {
		return nil, budgetHint(err)
	}
	if err := m.To(e.device); err != nil {
		m.Free()
		return nil, err
	}
	return m, nil
}

// localSuspect is a model verify runs in this process.
type localSuspect interface {
	suspect.Model
	Free()
}

// loadLocal loads a suspect file: an ONNX model (by its extension), or a
// Conferral model or deployed ensemble.
func loadLocal(e *env, path string, of *onnxFlags) (localSuspect, error) {
	if isONNX(path) {
		return openONNX(e, path, of)
	}
	m, _, err := train.LoadDeployed(path, e.device)
	return m, err
}

// loadSource loads extract's source model: an ONNX model (C-BIM takes its
// gradients through the interpreter) or a Conferral model file.
func loadSource(e *env, path string, of *onnxFlags) (m fingerprint.Model, id, arch string, free func(), err error) {
	if !isONNX(path) {
		ms, ids, err := loadModels(e, "source", path)
		if err != nil {
			return nil, "", "", nil, err
		}
		if len(ms) != 1 {
			freeAll(ms)
			return nil, "", "", nil, usagef("--source: want one model, got %d", len(ms))
		}
		return ms[0], ids[0], ms[0].Spec.Arch, func() { freeAll(ms) }, nil
	}
	om, err := openONNX(e, path, of)
	if err != nil {
		return nil, "", "", nil, err
	}
	sum, err := fileSHA256(strings.TrimSpace(path))
	if err != nil {
		om.Free()
		return nil, "", "", nil, err
	}
	return om, sum, fmt.Sprintf("onnx:%s", filepath.Base(path)), om.Free, nil
}
