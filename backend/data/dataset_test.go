package data

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestDatasetBasics(t *testing.T) {
	d := synth(5, 2, 3, 4, 3)
	if d.Len() != 5 || d.NumClasses() != 3 || d.ImageSize() != 24 {
		t.Fatalf("Len %d NumClasses %d ImageSize %d", d.Len(), d.NumClasses(), d.ImageSize())
	}
	img := d.Image(2)
	if len(img) != 24 || cap(img) != 24 || img[0] != pix(2, 0) || img[23] != pix(2, 23) {
		t.Errorf("Image(2) = %v", img)
	}
	img[0] = 99
	if d.Images[48] != 99 {
		t.Error("Image is not a view")
	}

	s := d.Subset([]int{4, 0, 4})
	if s.N != 3 || !slices.Equal(s.Labels, []int64{1, 0, 1}) || !slices.Equal(s.Image(2), d.Image(4)) {
		t.Fatalf("subset %d %v", s.N, s.Labels)
	}
	s.Image(0)[0] = 1
	s.Classes[0] = "changed"
	if d.Image(4)[0] == 1 || d.Classes[0] == "changed" {
		t.Error("Subset shares memory with the dataset")
	}
	if err := s.Validate(); err != nil {
		t.Error(err)
	}
	if !slices.Equal(d.ClassCounts(), []int{2, 2, 1}) {
		t.Errorf("ClassCounts %v", d.ClassCounts())
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(d *Dataset)
		want   string
	}{
		{"pixels", func(d *Dataset) { d.Images = d.Images[1:] }, "pixels"},
		{"labels", func(d *Dataset) { d.Labels = d.Labels[1:] }, "labels"},
		{"label range", func(d *Dataset) { d.Labels[1] = 3 }, "label 3 of image 1"},
		{"shape", func(d *Dataset) { d.C = 0 }, "bad shape"},
	} {
		d := synth(4, 1, 2, 2, 3)
		tc.change(d)
		if err := d.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestStats(t *testing.T) {
	d := synth(7, 3, 5, 5, 2)
	mean, std := d.Stats()
	plane := 25
	for c := range 3 {
		var s, ss float64
		for i := range d.N {
			for _, v := range d.Image(i)[c*plane : (c+1)*plane] {
				s += float64(v) / 255
			}
		}
		m := s / float64(d.N*plane)
		for i := range d.N {
			for _, v := range d.Image(i)[c*plane : (c+1)*plane] {
				ss += (float64(v)/255 - m) * (float64(v)/255 - m)
			}
		}
		sd := math.Sqrt(ss / float64(d.N*plane))
		if math.Abs(mean[c]-m) > 1e-12 || math.Abs(std[c]-sd) > 1e-12 {
			t.Errorf("channel %d: %v %v, want %v %v", c, mean[c], std[c], m, sd)
		}
	}
	// A constant image has no spread; an empty dataset gives zeros.
	one := synth(1, 1, 2, 2, 1)
	copy(one.Images, []uint8{255, 255, 255, 255})
	if m, s := one.Stats(); m[0] != 1 || s[0] != 0 {
		t.Errorf("constant: %v %v", m, s)
	}
	if m, s := synth(0, 2, 2, 2, 1).Stats(); len(m) != 2 || m[0] != 0 || s[1] != 0 {
		t.Errorf("empty: %v %v", m, s)
	}
}

func TestConcat(t *testing.T) {
	a := synth(3, 1, 2, 2, 2)
	b := synth(2, 1, 2, 2, 2)
	b.Part = "valid"
	b.NoFlip = true
	c, err := Concat(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if c.N != 5 || !slices.Equal(c.Image(3), b.Image(0)) || !slices.Equal(c.Labels, []int64{0, 1, 0, 0, 1}) || c.Part != "train+valid" || !c.NoFlip {
		t.Errorf("concat %d %v %q", c.N, c.Labels, c.Part)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	c.Images[0] = 200
	if a.Images[0] == 200 {
		t.Error("Concat shares memory")
	}
	if _, err := Concat(a, synth(2, 1, 2, 3, 2)); err == nil || !strings.Contains(err.Error(), "shapes") {
		t.Errorf("shape mismatch: %v", err)
	}
	if _, err := Concat(a, synth(2, 1, 2, 2, 3)); err == nil || !strings.Contains(err.Error(), "class") {
		t.Errorf("class mismatch: %v", err)
	}
}

func TestSelectClasses(t *testing.T) {
	d := synth(9, 1, 1, 1, 3) // labels 0 1 2 0 1 2 0 1 2, classes a b c
	s, err := d.SelectClassNames([]string{"c", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Classes, []string{"c", "a"}) || !slices.Equal(s.Labels, []int64{1, 0, 1, 0, 1, 0}) {
		t.Errorf("classes %q labels %v", s.Classes, s.Labels)
	}
	if !slices.Equal(s.Image(1), d.Image(2)) {
		t.Error("wrong image")
	}
	for _, bad := range [][]int{{3}, {-1}, {1, 1}} {
		if _, err := d.SelectClasses(bad); err == nil {
			t.Errorf("SelectClasses(%v) accepted", bad)
		}
	}
	if _, err := d.SelectClassNames([]string{"z"}); err == nil {
		t.Error("unknown name accepted")
	}
	d.Classes[1] = "a"
	if _, err := d.SelectClassNames([]string{"a"}); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("ambiguous name: %v", err)
	}
	if n := len(PaperImageNet32Classes()); n != 100 {
		t.Errorf("%d paper classes", n)
	}
}
