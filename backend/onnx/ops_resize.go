package onnx

import (
	"math"

	"github.com/conferral/conferral/backend/torch"
)

// resizeShape is the interpolation mode, output shape and scale per axis
// of Resize (opsets 10 to 17) and Upsample (opsets 7 to 9): exactly one of
// scales (an attribute of Upsample before opset 9, input 1 of Upsample and
// of Resize-10, input 2 from Resize-11 on) and sizes (input 3).
func resizeShape[V value](c *runCtx, n *node, in []V) (mode string, out []int64, scale []float64) {
	s := need(in, 0).Shape()
	r := len(s)
	var scales []float32
	var sizes []int64
	if n.op == "Upsample" && c.opset < 7 {
		fail("opset %d's Upsample is not supported", c.opset)
	}
	var none V
	switch {
	case n.op == "Upsample" && c.opset < 9:
		scales = n.floats("scales")
	case n.op == "Upsample" || c.opset < 11:
		scales = floatsIn(need(in, 1), "scales")
	default:
		if v := arg(in, 2); v != none && numelOf(v) > 0 {
			scales = floatsIn(v, "scales")
		}
		if v := arg(in, 3); v != none && numelOf(v) > 0 {
			sizes = intsIn(v, "sizes")
		}
	}
	mode = n.str("mode", "nearest")
	if mode == "bilinear" || mode == "trilinear" {
		mode = "linear"
	}
	if mode != "nearest" && mode != "linear" && mode != "cubic" {
		fail("mode %q is not supported", mode)
	}
	if (scales == nil) == (sizes == nil) {
		fail("exactly one of scales and sizes must be given")
	}
	out = make([]int64, r)
	scale = make([]float64, r)
	switch {
	case sizes != nil:
		if len(sizes) != r {
			fail("sizes %v do not fit rank %d", sizes, r)
		}
		for i := range r {
			if sizes[i] <= 0 {
				fail("sizes %v must be positive", sizes)
			}
			out[i], scale[i] = sizes[i], float64(sizes[i])/float64(s[i])
		}
	default:
		if len(scales) != r {
			fail("scales %v do not fit rank %d", scales, r)
		}
		for i := range r {
			if !(scales[i] > 0) || math.IsInf(float64(scales[i]), 0) {
				fail("scales %v must be positive", scales)
			}
			scale[i] = float64(scales[i])
			o := math.Floor(float64(s[i]) * scale[i])
			if o < 1 || o > maxElems {
				fail("scales %v give an output size of %v along axis %d", scales, o, i)
			}
			out[i] = int64(o)
		}
	}
	c.numel(out)
	for i, o := range out {
		if o > maxAxis {
			fail("output size %d along axis %d is over the limit of %d", o, i, maxAxis)
		}
	}
	return mode, out, scale
}

// opResize implements Resize (opsets 10 to 17) and Upsample. It is
// separable: each resized axis is an index select per tap of the
// interpolation kernel, weighted and summed, so gradients flow to the input
// and every coordinate mode of the ONNX reference works the same way.
func opResize(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	mode, out, scale := resizeShape(c, n, in)
	x := in[0]
	s := x.Shape()
	r := len(s)
	coord, nearest := "asymmetric", "floor"
	var roiF []float32
	if n.op == "Resize" && c.opset >= 11 {
		coord = n.str("coordinate_transformation_mode", "half_pixel")
		nearest = n.str("nearest_mode", "round_prefer_floor")
		if t := arg(in, 1); t != nil && t.Numel() > 0 {
			roiF = floatsOf(t, "roi")
		}
	}
	if coord == "tf_crop_and_resize" && len(roiF) != 2*r {
		fail("roi %v does not fit rank %d", roiF, r)
	}
	cubicA := n.float("cubic_coeff_a", -0.75)
	exclude := n.int("exclude_outside", 0) != 0
	extrap := n.float("extrapolation_value", 0)
	for a := range r {
		if out[a] == s[a] && scale[a] == 1 && coord != "tf_crop_and_resize" {
			continue
		}
		in, o := s[a], out[a]
		src := make([]float64, o) // the input coordinate of each output index
		for i := range o {
			fi, sc := float64(i), scale[a]
			switch coord {
			case "half_pixel":
				src[i] = (fi+0.5)/sc - 0.5
			case "pytorch_half_pixel":
				if o > 1 {
					src[i] = (fi+0.5)/sc - 0.5
				} else {
					src[i] = -0.5
				}
			case "align_corners":
				if w := sc * float64(in); w > 1 {
					src[i] = fi * float64(in-1) / (w - 1)
				}
			case "asymmetric":
				src[i] = fi / sc
			case "tf_half_pixel_for_nn":
				src[i] = (fi + 0.5) / sc
			case "tf_crop_and_resize":
				b, e := float64(roiF[a]), float64(roiF[r+a])
				if o > 1 {
					src[i] = b*float64(in-1) + fi*(e-b)*float64(in-1)/(float64(o)-1)
				} else {
					src[i] = 0.5 * (b + e) * float64(in-1)
				}
			default:
				fail("coordinate_transformation_mode %q is not supported", coord)
			}
		}
		x = resizeAxis(c, x, int64(a), in, src, mode, nearest, cubicA, exclude,
			coord == "tf_crop_and_resize", extrap)
	}
	return one(x)
}

// resizeAxis interpolates x along axis a (of size in) at coordinates src.
func resizeAxis(c *runCtx, x *torch.Tensor, a, in int64, src []float64, mode, nearest string,
	cubicA float64, exclude, crop bool, extrap float64) *torch.Tensor {
	o := int64(len(src))
	taps := 2
	if mode == "cubic" {
		taps = 4
	}
	idx := make([][]int64, taps)
	wts := make([][]float32, taps)
	for j := range taps {
		idx[j], wts[j] = make([]int64, o), make([]float32, o)
	}
	outside := make([]float32, o) // 1 where tf_crop_and_resize extrapolates
	anyOutside := false
	for i, x0 := range src {
		if crop && (x0 < 0 || x0 > float64(in-1)) {
			outside[i], anyOutside = 1, true
			continue
		}
		// As the ONNX reference: the left neighbour is floor(x0), or x0−1
		// when x0 is whole, and ratio is in (0, 1].
		base := math.Floor(x0)
		ratio := x0 - base
		if ratio == 0 {
			base--
			ratio = 1
		}
		var co []float64
		switch mode {
		case "nearest":
			up := false
			switch {
			case ratio == 1:
				up = true
			case nearest == "round_prefer_floor":
				up = ratio > 0.5
			case nearest == "round_prefer_ceil":
				up = ratio >= 0.5
			case nearest == "floor":
				up = false
			case nearest == "ceil":
				up = true
			default:
				fail("nearest_mode %q is not supported", nearest)
			}
			co = []float64{1, 0}
			if up {
				co = []float64{0, 1}
			}
		case "linear":
			co = []float64{1 - ratio, ratio}
		case "cubic":
			base--
			A, t := cubicA, ratio
			co = []float64{
				((A*(t+1)-5*A)*(t+1)+8*A)*(t+1) - 4*A,
				((A+2)*t-(A+3))*t*t + 1,
				((A+2)*(1-t)-(A+3))*(1-t)*(1-t) + 1,
				((A*(2-t)-5*A)*(2-t)+8*A)*(2-t) - 4*A,
			}
		}
		sum := 0.0
		for j := range taps {
			p := int64(base) + int64(j)
			if exclude && (p < 0 || p >= in) {
				co[j] = 0
			}
			sum += co[j]
			idx[j][i] = min(max(p, 0), in-1)
			wts[j][i] = float32(co[j])
		}
		if exclude && sum != 0 {
			for j := range taps {
				wts[j][i] = float32(co[j] / sum)
			}
		}
	}
	if mode == "nearest" {
		// One tap: pick the neighbour whose weight is 1.
		pick := make([]int64, o)
		for i := range o {
			pick[i] = idx[0][i]
			if wts[1][i] == 1 {
				pick[i] = idx[1][i]
			}
		}
		y := x.IndexSelect(a, c.ints(pick, o))
		if anyOutside {
			y = blendOutside(c, y, a, outside, extrap)
		}
		return y
	}
	if x.DType() != torch.Float32 {
		fail("%s interpolation needs float32 input, got %v", mode, x.DType())
	}
	shape := make([]int64, x.Dim())
	for i := range shape {
		shape[i] = 1
	}
	shape[a] = o
	var y *torch.Tensor
	for j := range taps {
		t := x.IndexSelect(a, c.ints(idx[j], o)).Mul(c.floats(wts[j], o).Reshape(shape...))
		if y == nil {
			y = t
		} else {
			y = y.Add(t)
		}
	}
	if anyOutside {
		y = blendOutside(c, y, a, outside, extrap)
	}
	return y
}

// blendOutside sets the entries of y marked in outside (along axis a) to v.
func blendOutside(c *runCtx, y *torch.Tensor, a int64, outside []float32, v float64) *torch.Tensor {
	shape := make([]int64, y.Dim())
	for i := range shape {
		shape[i] = 1
	}
	shape[a] = int64(len(outside))
	m := c.floats(outside, int64(len(outside))).Reshape(shape...)
	keep := m.RSubScalar(1)
	if y.DType() != torch.Float32 {
		y = y.To(torch.Float32, y.Device())
	}
	return y.Mul(keep).Add(m.MulScalar(v))
}
