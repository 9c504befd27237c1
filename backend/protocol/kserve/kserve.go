// Package kserve is the Open Inference Protocol's REST dialect (KServe v2;
// Triton and Seldon MLServer speak it too) as Conferral speaks it: the
// messages suspect.Remote sends and reads and predict.Handler reads and
// answers, and their paths. Fields are in the order of their JSON names,
// so that a message is written as a map of them would be.
package kserve

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Prefix starts a model's paths: Prefix+NAME[/versions/V] is its
// metadata (GET), and that path followed by /ready (GET) or /infer (POST).
const Prefix = "/v2/models/"

// Server paths: its metadata and its health.
const (
	ServerPath = "/v2"
	LivePath   = "/v2/health/live"
	ReadyPath  = "/v2/health/ready"
)

// Datatypes of the tensors Conferral sends and answers.
const (
	FP32  = "FP32"
	FP64  = "FP64"
	INT64 = "INT64"
	BYTES = "BYTES"
)

// ServerMetadata answers GET /v2.
type ServerMetadata struct {
	Extensions []string `json:"extensions"`
	Name       string   `json:"name"`
	Version    string   `json:"version"`
}

// ModelReady answers GET Prefix+NAME/ready.
type ModelReady struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

// TensorMetadata describes a model's input or output; −1 in Shape is a
// dimension of any size.
type TensorMetadata struct {
	Datatype string  `json:"datatype"`
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
}

// ModelMetadata answers GET Prefix+NAME.
type ModelMetadata struct {
	Inputs   []TensorMetadata `json:"inputs"`
	Name     string           `json:"name"`
	Outputs  []TensorMetadata `json:"outputs"`
	Platform string           `json:"platform"`
	Versions []string         `json:"versions"`
}

// Tensor is an input of an inference request or an output of its answer.
// Data holds its values flat, row-major in Shape's order, as JSON text:
// each side reads or writes the values itself (a request's straight into
// float32s).
type Tensor = TensorOf[json.RawMessage]

// TensorOf is a Tensor whose Data is D: a server answers with its values
// as they are (a []float32), encoded once with the answer rather than to
// JSON text first and then copied into it.
type TensorOf[D any] struct {
	Data     D       `json:"data"`
	Datatype string  `json:"datatype"`
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
}

// RequestedOutput names an output an inference request asks for.
type RequestedOutput struct {
	Name string `json:"name"`
}

// InferRequest is the body of POST Prefix+NAME/infer.
type InferRequest struct {
	ID      string            `json:"id,omitempty"`
	Inputs  []Tensor          `json:"inputs"`
	Outputs []RequestedOutput `json:"outputs,omitempty"`
}

// InferResponse answers an InferRequest; a failed one (status ≥ 400)
// carries only Error.
type InferResponse = InferResponseOf[json.RawMessage]

// InferResponseOf is an InferResponse whose outputs' Data are D (TensorOf).
type InferResponseOf[D any] struct {
	Error        string        `json:"error,omitempty"`
	ID           string        `json:"id,omitempty"`
	ModelName    string        `json:"model_name,omitempty"`
	ModelVersion string        `json:"model_version,omitempty"`
	Outputs      []TensorOf[D] `json:"outputs,omitempty"`
}

// AppendInferRequest appends to buf the InferRequest of one FP32 input
// named input of the given shape, whose n items (images) image appends in
// turn as comma-separated numbers, and asks for the output named output
// when it is not empty. It writes the JSON directly: a batch of images is
// hundreds of thousands of numbers.
func AppendInferRequest(buf []byte, input string, shape []int64, output string, n int, image func(buf []byte, i int) []byte) []byte {
	name, _ := json.Marshal(input)
	buf = fmt.Appendf(buf, `{"inputs":[{"name":%s,"shape":[`, name)
	for i, s := range shape {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendInt(buf, s, 10)
	}
	buf = append(buf, `],"datatype":"FP32","data":[`...)
	for i := range n {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = image(buf, i)
	}
	buf = append(buf, "]}]"...)
	if output != "" {
		out, _ := json.Marshal(output)
		buf = fmt.Appendf(buf, `,"outputs":[{"name":%s}]`, out)
	}
	return append(buf, '}')
}
