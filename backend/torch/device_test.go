package torch_test

import (
	"runtime"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

func TestParseDevice(t *testing.T) {
	cuda := torch.CUDADeviceCount()
	auto := torch.CPU
	if cuda > 0 {
		auto = torch.CUDA(0)
	}
	tests := []struct {
		in      string
		want    torch.Device
		wantErr bool
	}{
		{"", auto, false},
		{"auto", auto, false},
		{"cpu", torch.CPU, false},
		{"cuda", torch.CUDA(0), cuda < 1},
		{"cuda:0", torch.CUDA(0), cuda < 1},
		{"cuda:1", torch.CUDA(1), cuda < 2},
		{"cuda:99", torch.CPU, true},
		{"cuda:-1", torch.CPU, true},
		{"cuda:x", torch.CPU, true},
		{"cuda:", torch.CPU, true},
		{"CPU", torch.CPU, true},
		{"gpu", torch.CPU, true},
		{"cuda0", torch.CPU, true},
		{" cpu", torch.CPU, true},
	}
	for _, tc := range tests {
		got, err := torch.ParseDevice(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseDevice(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && got != tc.want {
			t.Errorf("ParseDevice(%q) = %v, want %v", tc.in, got, tc.want)
		}
		if err != nil && got != torch.CPU {
			t.Errorf("ParseDevice(%q) failed but returned %v", tc.in, got)
		}
	}
}

func TestDeviceString(t *testing.T) {
	tests := []struct {
		d    torch.Device
		want string
		cuda bool
	}{
		{torch.CPU, "cpu", false},
		{torch.CUDA(0), "cuda:0", true},
		{torch.CUDA(3), "cuda:3", true},
	}
	for _, tc := range tests {
		if tc.d.String() != tc.want || tc.d.IsCUDA() != tc.cuda {
			t.Errorf("%v: String %q IsCUDA %v, want %q %v", int(tc.d), tc.d.String(), tc.d.IsCUDA(), tc.want, tc.cuda)
		}
		back, err := torch.ParseDevice(tc.want)
		if tc.cuda && torch.CUDADeviceCount() <= int(tc.d) {
			continue // not parseable on this machine
		}
		if err != nil || back != tc.d {
			t.Errorf("ParseDevice(%q) = %v, %v", tc.want, back, err)
		}
	}
}

func TestDTypeString(t *testing.T) {
	for d, want := range map[torch.DType]string{
		torch.Float32: "float32", torch.Int64: "int64", torch.Bool: "bool", torch.Uint8: "uint8",
		torch.DType(42): "dtype(42)",
	} {
		if d.String() != want {
			t.Errorf("%d: %q, want %q", int(d), d.String(), want)
		}
	}
}

func TestThreads(t *testing.T) {
	if got := torch.NumThreads(); got != runtime.NumCPU() {
		t.Errorf("NumThreads = %d after TestMain set %d", got, runtime.NumCPU())
	}
	torch.SetNumThreads(0) // ignored
	if got := torch.NumThreads(); got != runtime.NumCPU() {
		t.Errorf("SetNumThreads(0) changed the count to %d", got)
	}
}

func TestToDeviceCPU(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.FromSlice(s, []float32{1.5, -2.5}, 2)
	y := x.ToDevice(torch.CPU)
	if y.Device() != torch.CPU || !equalSlices(y.Float32s(), []float32{1.5, -2.5}) {
		t.Errorf("ToDevice(CPU) = %v", y)
	}
	if y.Scope() != s {
		t.Errorf("ToDevice result not in the scope")
	}
}
