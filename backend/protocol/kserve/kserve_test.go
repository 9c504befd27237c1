package kserve

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
)

// TestAppendInferRequest: the request written directly decodes into the
// typed InferRequest the server reads, with the output asked for only
// when named.
func TestAppendInferRequest(t *testing.T) {
	image := func(buf []byte, i int) []byte {
		return strconv.AppendInt(append(strconv.AppendInt(buf, int64(i), 10), ','), int64(10*i), 10)
	}
	for _, tc := range []struct {
		name, input, output string
		n                   int
		want                InferRequest
	}{
		{"two images", "x\"y", "", 2, InferRequest{Inputs: []Tensor{{Name: "x\"y", Datatype: FP32, Shape: []int64{2, 2}, Data: json.RawMessage(`[0,0,1,10]`)}}}},
		{"an output named", "input", "probs", 1, InferRequest{Inputs: []Tensor{{Name: "input", Datatype: FP32, Shape: []int64{1, 2}, Data: json.RawMessage(`[0,0]`)}},
			Outputs: []RequestedOutput{{Name: "probs"}}}},
		{"no images", "input", "", 0, InferRequest{Inputs: []Tensor{{Name: "input", Datatype: FP32, Shape: []int64{0, 2}, Data: json.RawMessage(`[]`)}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := AppendInferRequest(nil, tc.input, []int64{int64(tc.n), 2}, tc.output, tc.n, image)
			var got InferRequest
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s decodes to %+v, want %+v", b, got, tc.want)
			}
		})
	}
}

// TestMessagesAsMaps: a message is written with its keys in order, as a
// map of them would be (the answers predict.Handler gave before the
// messages were typed), and an answer of the protocol's reference
// documentation reads.
func TestMessagesAsMaps(t *testing.T) {
	m := ModelMetadata{Name: "m", Versions: []string{"1"}, Platform: "conferral",
		Inputs: []TensorMetadata{{Name: "input", Datatype: FP32, Shape: []int64{-1, 1, 28, 28}}}, Outputs: []TensorMetadata{}}
	b, _ := json.Marshal(m)
	if want := `{"inputs":[{"datatype":"FP32","name":"input","shape":[-1,1,28,28]}],"name":"m","outputs":[],"platform":"conferral","versions":["1"]}`; string(b) != want {
		t.Errorf("metadata %s, want %s", b, want)
	}
	b, _ = json.Marshal(InferResponse{ID: "q", ModelName: "m", ModelVersion: "1", Outputs: []Tensor{{Name: "label", Datatype: INT64, Shape: []int64{1}, Data: json.RawMessage(`[3]`)}}})
	if want := `{"id":"q","model_name":"m","model_version":"1","outputs":[{"data":[3],"datatype":"INT64","name":"label","shape":[1]}]}`; string(b) != want {
		t.Errorf("answer %s, want %s", b, want)
	}
	// The Open Inference Protocol's example answer.
	doc := `{"model_name":"mymodel","outputs":[{"name":"output0","shape":[3,2],"datatype":"FP32","data":[1.0,1.1,2.0,2.1,3.0,3.1]}]}`
	var r InferResponse
	if err := json.Unmarshal([]byte(doc), &r); err != nil || len(r.Outputs) != 1 || r.Outputs[0].Name != "output0" || string(r.Outputs[0].Data) != "[1.0,1.1,2.0,2.1,3.0,3.1]" {
		t.Errorf("the reference answer reads as %+v (%v)", r, err)
	}
}
