package suspect

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Endpoints answer in many shapes: scores per class (probabilities, logits
// or a one-hot vector), a class index, or a class name, each possibly
// nested in extra arrays or objects. The functions here reduce an answer
// to one label per image, and say clearly when they cannot.

// preferred are output names tried, in order, when an answer has several
// and none was named.
var preferred = []string{"class_ids", "label", "labels", "probabilities", "probs", "scores", "logits", "predictions", "output", "outputs", "classes"}

// decodeJSON decodes with numbers kept as written.
func decodeJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("data after the JSON value")
	}
	return nil
}

// field picks the answer out of an object of named outputs.
func (r *Remote) field(m map[string]any) (any, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if r.o.OutputName != "" {
		v, ok := m[r.o.OutputName]
		if !ok {
			return nil, fmt.Errorf("no output %q (there are %s)", r.o.OutputName, remoteList(keys))
		}
		return v, nil
	}
	if len(m) == 1 {
		return m[keys[0]], nil
	}
	for _, p := range preferred {
		if v, ok := m[p]; ok {
			return v, nil
		}
	}
	return nil, fmt.Errorf("cannot tell which of the outputs %s holds the class; name it (OutputName / --output)", remoteList(keys))
}

// perImage splits flat values into n equal answers and labels each.
func (r *Remote) perImage(flat []any, n int, what string) ([]int64, error) {
	if n == 0 {
		if len(flat) != 0 {
			return nil, fmt.Errorf("%s: %d values for no images", what, len(flat))
		}
		return []int64{}, nil
	}
	if len(flat) == 0 || len(flat)%n != 0 {
		return nil, fmt.Errorf("%s: %d values cannot be %d answers", what, len(flat), n)
	}
	k := len(flat) / n
	out := make([]int64, n)
	for i := range out {
		l, err := r.label(flat[i*k : (i+1)*k])
		if err != nil {
			return nil, fmt.Errorf("%s, image %d: %w", what, i, err)
		}
		out[i] = l
	}
	return out, nil
}

// label reduces one image's answer: one value is a class index or name,
// several numbers are scores (argmax, the first of equal maxima).
func (r *Remote) label(vals []any) (int64, error) {
	switch len(vals) {
	case 0:
		return 0, fmt.Errorf("an empty answer")
	case 1:
		return r.scalar(vals[0])
	}
	if k := len(r.o.Classes); k > 0 && len(vals) != k {
		return 0, fmt.Errorf("%d scores for %d classes", len(vals), k)
	}
	best, bestV := -1, math.Inf(-1)
	for i, v := range vals {
		num, ok := v.(json.Number)
		if !ok {
			return 0, fmt.Errorf("%d values and value %d is %s: not scores", len(vals), i, kind(v))
		}
		f, err := num.Float64()
		if err != nil || math.IsNaN(f) {
			return 0, fmt.Errorf("score %q is not a number", remoteText(string(num), 40))
		}
		if best < 0 || f > bestV {
			best, bestV = i, f
		}
	}
	return int64(best), nil
}

// scalar reads a class index or a class name.
func (r *Remote) scalar(v any) (int64, error) {
	var idx int64
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return 0, fmt.Errorf("label %s is not a class index", remoteText(string(x), 40))
		}
		idx = int64(f)
	case string:
		if i := slices.Index(r.o.Classes, x); i >= 0 {
			return int64(i), nil
		}
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			if len(r.o.Classes) == 0 {
				return 0, fmt.Errorf("label %q is a name, and no class names were given", remoteText(x, 40))
			}
			return 0, fmt.Errorf("label %q is none of the classes %s", remoteText(x, 40), strings.Join(r.o.Classes, ", "))
		}
		idx = n
	default:
		return 0, fmt.Errorf("label is %s", kind(v))
	}
	if idx < 0 || (len(r.o.Classes) > 0 && idx >= int64(len(r.o.Classes))) {
		return 0, fmt.Errorf("class index %d is out of range", idx)
	}
	return idx, nil
}

// flatten appends the leaves of nested arrays to dst.
func flatten(v any, dst []any) []any {
	if a, ok := v.([]any); ok {
		for _, e := range a {
			dst = flatten(e, dst)
		}
		return dst
	}
	return append(dst, v)
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// shapeText shows a shape that came from an endpoint, bounded.
func shapeText(shape []int64) string {
	if len(shape) > 8 {
		return fmt.Sprintf("%v… (%d dimensions)", shape[:8], len(shape))
	}
	return fmt.Sprint(shape)
}
