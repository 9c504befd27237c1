package suspect

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/conferral/conferral/backend/protocol/kserve"
)

// kserveDialect speaks the Open Inference Protocol (package kserve).
type kserveDialect struct{}

func (kserveDialect) layout() Layout { return NCHW }

func (kserveDialect) metadata(r *Remote, body []byte) (string, []int64, error) {
	var m kserve.ModelMetadata
	if err := json.Unmarshal(body, &m); err != nil {
		return "", nil, fmt.Errorf("metadata is not KServe v2 model metadata: %w", err)
	}
	in := slices.IndexFunc(m.Inputs, func(x kserve.TensorMetadata) bool { return r.o.InputName == "" || x.Name == r.o.InputName })
	if in < 0 {
		return "", nil, nil // no inputs listed, or not the one asked for: send as told
	}
	if r.o.InputName == "" && len(m.Inputs) > 1 {
		return "", nil, fmt.Errorf("the model has %d inputs; name one (InputName / --input)", len(m.Inputs))
	}
	x := m.Inputs[in]
	if x.Datatype != "" && x.Datatype != kserve.FP32 {
		return "", nil, fmt.Errorf("input %q is %s; only FP32 inputs are supported", remoteText(x.Name, 40), remoteText(x.Datatype, 20))
	}
	return x.Name, x.Shape, nil
}

// request is an InferRequest of the images flat, in row-major order of
// the layout's shape.
func (kserveDialect) request(r *Remote, w wire, b Images) []byte {
	shape := []int64{int64(b.N)}
	for _, a := range axes(w.layout, b) {
		shape = append(shape, int64(a.size))
	}
	return kserve.AppendInferRequest(make([]byte, 0, 64+len(b.X)*10), w.input, shape, r.o.OutputName, b.N, func(buf []byte, i int) []byte {
		return r.appendImage(buf, w.layout, b, i, true)
	})
}

func (kserveDialect) labels(r *Remote, body []byte, n int) ([]int64, error) {
	return r.kserveLabels(body, n)
}

// kserveLabels reads an InferResponse.
func (r *Remote) kserveLabels(body []byte, n int) ([]int64, error) {
	var resp kserve.InferResponse
	if err := decodeJSON(body, &resp); err != nil {
		return nil, fmt.Errorf("the answer is not KServe v2 JSON: %w", err)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("the endpoint says: %s", remoteText(resp.Error, maxShown))
	}
	if len(resp.Outputs) == 0 {
		return nil, fmt.Errorf("the answer has no outputs")
	}
	names := make([]string, len(resp.Outputs))
	for i, o := range resp.Outputs {
		names[i] = o.Name
	}
	pick := 0
	if r.o.OutputName != "" {
		pick = slices.Index(names, r.o.OutputName)
		if pick < 0 {
			return nil, fmt.Errorf("the answer has no output %q (it has %s)", r.o.OutputName, remoteList(names))
		}
	} else {
		for _, p := range preferred {
			if i := slices.Index(names, p); i >= 0 && len(names) > 1 {
				pick = i
				break
			}
		}
	}
	o := resp.Outputs[pick]
	var data any
	if err := decodeJSON(o.Data, &data); err != nil {
		return nil, fmt.Errorf("output %q: data: %w", remoteText(o.Name, 40), err)
	}
	flat := flatten(data, nil)
	if len(o.Shape) > 0 {
		total := int64(1)
		for _, s := range o.Shape {
			if s < 0 {
				return nil, fmt.Errorf("output %q: negative dimension in shape %s", remoteText(o.Name, 40), shapeText(o.Shape))
			}
			total *= s
		}
		if total != int64(len(flat)) {
			return nil, fmt.Errorf("output %q: shape %s holds %d values, data has %d", remoteText(o.Name, 40), shapeText(o.Shape), total, len(flat))
		}
		if o.Shape[0] != int64(n) {
			return nil, fmt.Errorf("output %q: %d answers to %d images (shape %s)", remoteText(o.Name, 40), o.Shape[0], n, shapeText(o.Shape))
		}
	}
	return r.perImage(flat, n, "output "+strconv.Quote(remoteText(o.Name, 40)))
}
