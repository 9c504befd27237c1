package predict_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/predict"
	"github.com/conferral/conferral/backend/torch"
)

// TestHandlerLargeValues sends finite values far outside the pixel range:
// the model's scores overflow, and the answer is a 400 that says why, in
// JSON, not a 500 about encoding NaN.
func TestHandlerLargeValues(t *testing.T) {
	classes := []string{"a", "b", "c"}
	m, err := nn.New(nn.Spec{Arch: "mlp", Dataset: "test", Classes: classes, C: 1, H: 4, W: 4, Mean: []float64{0.5}, Std: []float64{0.25}}, 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	h, err := predict.New(m, predict.Options{Classes: classes, C: 1, H: 4, W: 4})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	image := func(v string) string { return strings.TrimSuffix(strings.Repeat(v+",", 16), ",") }
	cases := []struct {
		name, path, body string
		status           int
		says             string
	}{
		{"kserve, in range", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[1,1,4,4],"datatype":"FP32","data":[` + image("0.5") + `]}]}`, 200, `"shape":[1,3]`},
		{"kserve, 3e38", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[1,1,4,4],"datatype":"FP32","data":[` + image("3e38") + `]}]}`, 400, "image 0: the model's scores are not finite"},
		{"kserve, -3e38", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[2,1,4,4],"datatype":"FP32","data":[` + image("0.5") + "," + image("-3e38") + `]}]}`, 400, "image 1: the model's scores are not finite"},
		{"tfserving, 3e38", "/v1/models/model:predict", `{"instances":[[[` + strings.Repeat("["+strings.TrimSuffix(strings.Repeat("3e38,", 4), ",")+"],", 3) + "[3e38,3e38,3e38,3e38]" + `]]]}`, 400, "not finite"},
		{"tfserving, beyond float32", "/v1/models/model:predict", `{"instances":[[[[1e39,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,0]]]]}`, 400, "not a float32"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.Post(srv.URL+c.path, "application/json", strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.says) || !json.Valid(body) {
				t.Errorf("%d %s, want %d with %q", resp.StatusCode, body, c.status, c.says)
			}
		})
	}
}
