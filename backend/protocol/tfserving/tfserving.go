// Package tfserving is TensorFlow Serving's REST dialect as Conferral
// speaks it: the messages suspect.Remote sends and reads and
// predict.Handler reads and answers, and their paths. Fields are in the
// order of their JSON names, so that a message is written as a map of them
// would be.
package tfserving

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Prefix starts a model's paths: Prefix+NAME[/versions/V|/labels/L] is
// its status (GET), that path followed by /metadata its metadata (GET) and
// by PredictSuffix its predictions (POST).
const (
	Prefix        = "/v1/models/"
	PredictSuffix = ":predict"
	MetadataPath  = "/metadata"
)

// DefaultSignature is the signature a predict request without
// signature_name runs.
const DefaultSignature = "serving_default"

// Tensor datatypes.
const (
	Float  = "DT_FLOAT"
	Int64  = "DT_INT64"
	String = "DT_STRING"
)

// Size is a dimension's size, −1 for any. TensorFlow Serving writes it as
// a string ("28"); it reads from a string or a number.
type Size int64

// MarshalJSON writes the size as a string.
func (s Size) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, strconv.FormatInt(int64(s), 10)), nil
}

// UnmarshalJSON reads a size from a string or a number.
func (s *Size) UnmarshalJSON(b []byte) error {
	text := strings.Trim(string(b), `"`)
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		if len(text) > 20 {
			text = text[:20] + "…"
		}
		return fmt.Errorf("dimension size %q is not an integer", text)
	}
	*s = Size(n)
	return nil
}

// Dim is one dimension of a tensor's shape.
type Dim struct {
	Name string `json:"name"`
	Size Size   `json:"size"`
}

// TensorShape is a tensor's shape.
type TensorShape struct {
	Dim         []Dim `json:"dim"`
	UnknownRank bool  `json:"unknown_rank"`
}

// Sizes are the shape's sizes.
func (t TensorShape) Sizes() []int64 {
	out := make([]int64, len(t.Dim))
	for i, d := range t.Dim {
		out[i] = int64(d.Size)
	}
	return out
}

// Shape is the TensorShape of sizes.
func Shape(sizes []int64) TensorShape {
	t := TensorShape{Dim: make([]Dim, len(sizes))}
	for i, s := range sizes {
		t.Dim[i] = Dim{Size: Size(s)}
	}
	return t
}

// TensorInfo describes a signature's input or output.
type TensorInfo struct {
	Dtype       string      `json:"dtype"`
	Name        string      `json:"name"`
	TensorShape TensorShape `json:"tensor_shape"`
}

// SignatureDef is one signature of a model: its inputs and outputs by
// name.
type SignatureDef struct {
	Inputs     map[string]TensorInfo `json:"inputs"`
	MethodName string                `json:"method_name"`
	Outputs    map[string]TensorInfo `json:"outputs"`
}

// ModelSpec names a model and its version.
type ModelSpec struct {
	Name          string `json:"name"`
	SignatureName string `json:"signature_name"`
	Version       string `json:"version"`
}

// Signatures are a model's signatures by name.
type Signatures struct {
	SignatureDef map[string]SignatureDef `json:"signature_def"`
}

// Metadata is a model's metadata proper.
type Metadata struct {
	SignatureDef Signatures `json:"signature_def"`
}

// ModelMetadata answers GET Prefix+NAME/metadata.
type ModelMetadata struct {
	Metadata  Metadata  `json:"metadata"`
	ModelSpec ModelSpec `json:"model_spec"`
}

// Status is a version's error status.
type Status struct {
	ErrorCode    string `json:"error_code"`
	ErrorMessage string `json:"error_message"`
}

// VersionStatus is the state of one version of a model.
type VersionStatus struct {
	State   string `json:"state"`
	Status  Status `json:"status"`
	Version string `json:"version"`
}

// ModelStatus answers GET Prefix+NAME.
type ModelStatus struct {
	ModelVersionStatus []VersionStatus `json:"model_version_status"`
}

// PredictRequest is the body of POST Prefix+NAME:predict: Instances (the
// row format, one item per image) or Inputs (the columnar format: the
// batch, or an object of named batches), as JSON text that the server
// reads straight into float32s.
type PredictRequest struct {
	Inputs        json.RawMessage `json:"inputs,omitempty"`
	Instances     json.RawMessage `json:"instances,omitempty"`
	SignatureName string          `json:"signature_name,omitempty"`
}

// PredictResponse answers a PredictRequest: Predictions to Instances,
// Outputs to Inputs (each a list with one item per image, or an object of
// named lists), as JSON text; a failed one (status ≥ 400) carries only
// Error.
type PredictResponse = PredictResponseOf[json.RawMessage]

// PredictResponseOf is a PredictResponse whose Outputs and Predictions are
// D: a server answers with its values as they are (a [][]float32), encoded
// once with the answer rather than to JSON text first and then copied
// into it.
type PredictResponseOf[D any] struct {
	Error       string `json:"error,omitempty"`
	Outputs     D      `json:"outputs,omitempty"`
	Predictions D      `json:"predictions,omitempty"`
}

// AppendPredictRequest appends to buf the PredictRequest of n images that
// image appends in turn, each a JSON array: in the row format
// ({"instances": [image, …]}) or, columnar, {"inputs": […]}; under the
// input's name when input is not empty. It writes the JSON directly: a
// batch of images is hundreds of thousands of numbers.
func AppendPredictRequest(buf []byte, input string, columnar bool, n int, image func(buf []byte, i int) []byte) []byte {
	key := "instances"
	if columnar {
		key = "inputs"
	}
	named := input != ""
	name, _ := json.Marshal(input)
	buf = append(buf, `{"`+key+`":`...)
	if named && columnar {
		buf = append(buf, '{')
		buf = append(buf, name...)
		buf = append(buf, ':')
	}
	buf = append(buf, '[')
	for i := range n {
		if i > 0 {
			buf = append(buf, ',')
		}
		if named && !columnar {
			buf = append(buf, '{')
			buf = append(buf, name...)
			buf = append(buf, ':')
		}
		buf = image(buf, i)
		if named && !columnar {
			buf = append(buf, '}')
		}
	}
	buf = append(buf, ']')
	if named && columnar {
		buf = append(buf, '}')
	}
	return append(buf, '}')
}
