package suspect

import (
	"encoding/json"
	"fmt"

	"github.com/conferral/conferral/backend/protocol/tfserving"
)

// tfDialect speaks TensorFlow Serving's REST API (package tfserving).
type tfDialect struct{}

func (tfDialect) layout() Layout { return NHWC }

func (tfDialect) metadata(r *Remote, body []byte) (string, []int64, error) {
	var m tfserving.ModelMetadata
	if err := json.Unmarshal(body, &m); err != nil {
		return "", nil, fmt.Errorf("metadata is not TensorFlow Serving model metadata: %w", err)
	}
	sig, ok := m.Metadata.SignatureDef.SignatureDef[tfserving.DefaultSignature]
	if !ok || len(sig.Inputs) != 1 {
		return "", nil, nil // send as told
	}
	for name, in := range sig.Inputs {
		if in.Dtype != "" && in.Dtype != tfserving.Float {
			return "", nil, fmt.Errorf("input %q is %s; only DT_FLOAT inputs are supported", remoteText(name, 40), remoteText(in.Dtype, 20))
		}
		// TensorFlow Serving takes unnamed instances for a one-input
		// signature: no name.
		return "", in.TensorShape.Sizes(), nil
	}
	return "", nil, nil
}

// request is a PredictRequest of the images, each nested in the layout,
// under the input's name when one is set.
func (tfDialect) request(r *Remote, w wire, b Images) []byte {
	return tfserving.AppendPredictRequest(make([]byte, 0, 64+len(b.X)*10), r.o.InputName, r.o.Columnar, b.N, func(buf []byte, i int) []byte {
		return r.appendImage(buf, w.layout, b, i, false)
	})
}

func (tfDialect) labels(r *Remote, body []byte, n int) ([]int64, error) { return r.tfLabels(body, n) }

// tfLabels reads a PredictResponse, row ({"predictions": […]}) or
// columnar ({"outputs": …}).
func (r *Remote) tfLabels(body []byte, n int) ([]int64, error) {
	var resp tfserving.PredictResponse
	if err := decodeJSON(body, &resp); err != nil {
		return nil, fmt.Errorf("the answer is not TensorFlow Serving JSON: %w", err)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("the endpoint says: %s", remoteText(resp.Error, maxShown))
	}
	raw := resp.Predictions
	if raw == nil {
		if raw = resp.Outputs; raw == nil {
			return nil, fmt.Errorf("the answer has neither \"predictions\" nor \"outputs\"")
		}
	}
	var preds any
	if err := decodeJSON(raw, &preds); err != nil {
		return nil, fmt.Errorf("the answer is not TensorFlow Serving JSON: %w", err)
	}
	if m, ok := preds.(map[string]any); ok { // columnar, named outputs
		v, err := r.field(m)
		if err != nil {
			return nil, err
		}
		preds = v
	}
	rows, ok := preds.([]any)
	if !ok {
		return nil, fmt.Errorf("the predictions are %s, not a list", kind(preds))
	}
	if len(rows) != n {
		return nil, fmt.Errorf("%d predictions for %d images", len(rows), n)
	}
	out := make([]int64, n)
	for i, row := range rows {
		if m, ok := row.(map[string]any); ok {
			v, err := r.field(m)
			if err != nil {
				return nil, fmt.Errorf("prediction %d: %w", i, err)
			}
			row = v
		}
		l, err := r.label(flatten(row, nil))
		if err != nil {
			return nil, fmt.Errorf("prediction %d: %w", i, err)
		}
		out[i] = l
	}
	return out, nil
}
