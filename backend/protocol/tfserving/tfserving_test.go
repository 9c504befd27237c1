package tfserving

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// TestAppendPredictRequest: the request written directly is the row or
// the columnar format, named or not, and decodes into the typed
// PredictRequest the server reads.
func TestAppendPredictRequest(t *testing.T) {
	image := func(buf []byte, i int) []byte {
		return append(strconv.AppendInt(append(buf, '['), int64(i), 10), ']')
	}
	for _, tc := range []struct {
		input    string
		columnar bool
		want     string
	}{
		{"", false, `{"instances":[[0],[1]]}`},
		{"x", false, `{"instances":[{"x":[0]},{"x":[1]}]}`},
		{"", true, `{"inputs":[[0],[1]]}`},
		{"x", true, `{"inputs":{"x":[[0],[1]]}}`},
	} {
		b := AppendPredictRequest(nil, tc.input, tc.columnar, 2, image)
		if string(b) != tc.want {
			t.Errorf("input %q, columnar %v: %s, want %s", tc.input, tc.columnar, b, tc.want)
		}
		var r PredictRequest
		if err := json.Unmarshal(b, &r); err != nil || (r.Instances == nil) == (r.Inputs == nil) || (r.Inputs != nil) != tc.columnar {
			t.Errorf("%s decodes to %+v (%v)", b, r, err)
		}
	}
}

// TestMetadata: sizes are written as TensorFlow Serving writes them
// (strings) and read from either form; the reference documentation's
// metadata reads; a size that is not an integer is refused.
func TestMetadata(t *testing.T) {
	b, _ := json.Marshal(Shape([]int64{-1, 28}))
	if want := `{"dim":[{"name":"","size":"-1"},{"name":"","size":"28"}],"unknown_rank":false}`; string(b) != want {
		t.Errorf("shape %s, want %s", b, want)
	}
	doc := `{"model_spec":{"name":"m","signature_name":"","version":"1"},"metadata":{"signature_def":{"signature_def":{"serving_default":{
		"inputs":{"x":{"dtype":"DT_FLOAT","tensor_shape":{"dim":[{"size":"-1","name":""},{"size":3,"name":""}],"unknown_rank":false},"name":"x:0"}},
		"outputs":{},"method_name":"tensorflow/serving/predict"}}}}}`
	var m ModelMetadata
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	in := m.Metadata.SignatureDef.SignatureDef[DefaultSignature].Inputs["x"]
	if got := in.TensorShape.Sizes(); len(got) != 2 || got[0] != -1 || got[1] != 3 || in.Dtype != Float {
		t.Errorf("input %+v, sizes %v", in, got)
	}
	if err := json.Unmarshal([]byte(strings.Replace(doc, `"size":3`, `"size":"three"`, 1)), &m); err == nil || !strings.Contains(err.Error(), `"three" is not an integer`) {
		t.Errorf("a size of three: %v", err)
	}
	b, _ = json.Marshal(PredictResponse{Predictions: json.RawMessage(`[]`)})
	if string(b) != `{"predictions":[]}` {
		t.Errorf("an answer to no images: %s", b)
	}
}
