package fingerprint_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/safetensors"
)

// synthetic returns a valid fingerprint of n 1×8×6 examples with
// deterministic content; every field survives a round trip exactly
// (Confer values are float32-representable).
func synthetic(n int) *fingerprint.Fingerprint {
	const c, h, w = 1, 8, 6
	per := c * h * w
	f := &fingerprint.Fingerprint{N: n, C: c, H: h, W: w, Images: make([]uint8, n*per), Originals: make([]uint8, n*per)}
	for i := range f.Images {
		f.Originals[i] = uint8(i * 7 % 251)
		f.Images[i] = f.Originals[i] + uint8(i%5) // within 4/255 of the original
	}
	for i := range n {
		f.Labels = append(f.Labels, int64(i%10))
		f.Keys = append(f.Keys, int64((i+3)%10))
		f.Confer = append(f.Confer, []float64{1, 0.75, 0.5}[i%3])
	}
	f.Meta = fingerprint.Meta{
		Dataset: "fashion-mnist", Classes: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"},
		Mean: []float64{0.286}, Std: []float64{0.353}, SourceSHA256: "abc123", SourceArch: "cnn",
		Created: time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC), Attack: "cbim", Loss: "linear",
		Eps: 0.05, Alpha: 0.01, Steps: 100, Dropout: 0.5, Tau: 1,
		Surrogates: []string{"s1", "s2"}, References: []string{"r1"}, Candidates: 3 * n, ReferenceRate: 0.25, Seed: 42,
	}
	return f
}

func saved(t *testing.T, f *fingerprint.Fingerprint) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fp.safetensors")
	if err := f.Save(path); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return path
}

func TestSaveLoadRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 7} {
		f := synthetic(n)
		path := saved(t, f)
		g, err := fingerprint.Load(path)
		if err != nil {
			t.Fatalf("n=%d: Load: %v", n, err)
		}
		if n == 0 { // empty slices come back empty, maybe not nil
			if g.N != 0 || len(g.Images)+len(g.Originals)+len(g.Keys)+len(g.Labels)+len(g.Confer) != 0 || !reflect.DeepEqual(g.Meta, f.Meta) {
				t.Errorf("n=0: loaded %+v", g)
			}
			continue
		}
		if !reflect.DeepEqual(f, g) {
			t.Errorf("n=%d: round trip differs:\nsaved  %+v\nloaded %+v", n, f, g)
		}
		// The file's metadata carries the commitment Commitment computes.
		c, err := f.Commitment()
		if err != nil {
			t.Fatal(err)
		}
		file, err := safetensors.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := file.Metadata["commitment"]; got != c || len(c) != 64 {
			t.Errorf("file commitment %q, Commitment() %q", got, c)
		}
		if got := file.Metadata["conferral.format"]; got != "conferral-fingerprint/1" {
			t.Errorf("format %q", got)
		}
		if got, want := g.Float32()[1], float32(f.Images[1])/255; got != want {
			t.Errorf("Float32()[1] = %v, want %v", got, want)
		}
		if got, want := g.OriginalsFloat32()[2], float32(f.Originals[2])/255; got != want {
			t.Errorf("OriginalsFloat32()[2] = %v, want %v", got, want)
		}
	}
	// The commitment binds the content: another fingerprint, another value.
	a, _ := synthetic(3).Commitment()
	other := synthetic(3)
	other.Images[0]++
	b, _ := other.Commitment()
	if a == b {
		t.Error("changing an image byte leaves the commitment unchanged")
	}
}

// tensorOffset returns the file offset of the first data byte of tensor
// name in a safetensors file.
func tensorOffset(t *testing.T, raw []byte, name string) int {
	t.Helper()
	hl := int(binary.LittleEndian.Uint64(raw[:8]))
	var header map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+hl], &header); err != nil {
		t.Fatal(err)
	}
	var e struct {
		DataOffsets [2]int `json:"data_offsets"`
	}
	if err := json.Unmarshal(header[name], &e); err != nil {
		t.Fatalf("tensor %q: %v", name, err)
	}
	if e.DataOffsets[1] <= e.DataOffsets[0] {
		t.Fatalf("tensor %q is empty", name)
	}
	return 8 + hl + e.DataOffsets[0]
}

// rewrite reads the file at path, lets edit change it, and writes it back
// as a structurally valid safetensors file.
func rewrite(t *testing.T, path string, edit func(f *safetensors.File)) {
	t.Helper()
	file, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edit(file)
	if err := safetensors.WriteFile(path, file); err != nil {
		t.Fatal(err)
	}
	if _, err := safetensors.ReadFile(path); err != nil {
		t.Fatalf("the tampered file is not valid safetensors: %v", err)
	}
}

// TestLoadRefusesTampering alters a saved fingerprint in ways that keep the
// file readable and checks that Load refuses each by its commitment.
func TestLoadRefusesTampering(t *testing.T) {
	setMeta := func(change func(m map[string]any)) func(f *safetensors.File) {
		return func(f *safetensors.File) {
			var m map[string]any
			if err := json.Unmarshal([]byte(f.Metadata["fingerprint"]), &m); err != nil {
				t.Fatal(err)
			}
			change(m)
			b, _ := json.Marshal(m)
			f.Metadata["fingerprint"] = string(b)
		}
	}
	setTensor := func(name string, change func(data []byte)) func(f *safetensors.File) {
		return func(f *safetensors.File) {
			for i := range f.Tensors {
				if f.Tensors[i].Name == name {
					change(f.Tensors[i].Data)
					return
				}
			}
			t.Fatalf("no tensor %q", name)
		}
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, path string)
	}{
		{"one image byte flipped in place", func(t *testing.T, path string) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			raw[tensorOffset(t, raw, "images")+5] ^= 0x01
			if err := os.WriteFile(path, raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"one original byte flipped in place", func(t *testing.T, path string) {
			raw, _ := os.ReadFile(path)
			raw[tensorOffset(t, raw, "originals")+len(raw)%7] ^= 0x80
			os.WriteFile(path, raw, 0o644)
		}},
		{"eps changed in the metadata", func(t *testing.T, path string) {
			rewrite(t, path, setMeta(func(m map[string]any) { m["eps"] = 0.5 }))
		}},
		{"reference rate changed in the metadata", func(t *testing.T, path string) {
			rewrite(t, path, setMeta(func(m map[string]any) { m["reference_rate"] = 0.01 }))
		}},
		{"a key changed to another class", func(t *testing.T, path string) {
			rewrite(t, path, setTensor("keys", func(d []byte) { d[0] ^= 1 }))
		}},
		{"a conferrability score changed", func(t *testing.T, path string) {
			rewrite(t, path, setTensor("confer", func(d []byte) { d[3] ^= 0x01 }))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := saved(t, synthetic(4))
			tc.tamper(t, path)
			_, err := fingerprint.Load(path)
			if err == nil {
				t.Fatal("Load accepted a tampered file")
			}
			if !strings.Contains(err.Error(), "commitment") {
				t.Errorf("error %q does not mention the commitment", err)
			}
		})
	}
}

// TestLoadRefusesMalformed checks that broken and foreign files give
// errors, never a fingerprint or a panic.
func TestLoadRefusesMalformed(t *testing.T) {
	good, err := os.ReadFile(saved(t, synthetic(4)))
	if err != nil {
		t.Fatal(err)
	}
	foreign := func(t *testing.T, path string, meta map[string]string, drop string) {
		file, err := safetensors.ReadFile(saved(t, synthetic(4)))
		if err != nil {
			t.Fatal(err)
		}
		if meta != nil {
			file.Metadata = meta
		}
		if drop != "" {
			var kept []safetensors.Tensor
			for _, x := range file.Tensors {
				if x.Name != drop {
					kept = append(kept, x)
				}
			}
			file.Tensors = kept
		}
		if err := safetensors.WriteFile(path, file); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		write func(t *testing.T, path string)
		want  string // a part of the error message
	}{
		{"missing file", func(t *testing.T, path string) {}, "loading fingerprint"},
		{"empty file", func(t *testing.T, path string) { os.WriteFile(path, nil, 0o644) }, "loading fingerprint"},
		{"truncated in the data", func(t *testing.T, path string) { os.WriteFile(path, good[:len(good)-10], 0o644) }, "loading fingerprint"},
		{"truncated in the header", func(t *testing.T, path string) { os.WriteFile(path, good[:20], 0o644) }, "loading fingerprint"},
		{"garbage", func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte{0xff, 0x13, 0x00}, 100), 0o644)
		}, "loading fingerprint"},
		{"a PNG", func(t *testing.T, path string) {
			var b bytes.Buffer
			png.Encode(&b, fingerprint.Pixel(make([]uint8, 16), 1, 4, 4))
			os.WriteFile(path, b.Bytes(), 0o644)
		}, "loading fingerprint"},
		{"a model file, not a fingerprint", func(t *testing.T, path string) {
			safetensors.WriteFile(path, &safetensors.File{
				Metadata: map[string]string{"nn.arch": "cnn"},
				Tensors:  []safetensors.Tensor{safetensors.F32("fc.weight", []int64{2, 2}, []float32{1, 2, 3, 4})},
			})
		}, "not a Conferral fingerprint"},
		{"another format version", func(t *testing.T, path string) {
			foreign(t, path, map[string]string{"conferral.format": "conferral-fingerprint/99"}, "")
		}, "not a Conferral fingerprint"},
		{"no description", func(t *testing.T, path string) {
			foreign(t, path, map[string]string{"conferral.format": "conferral-fingerprint/1", "fingerprint": "{not json"}, "")
		}, "description"},
		{"no confer tensor", func(t *testing.T, path string) { foreign(t, path, nil, "confer") }, `"confer"`},
		{"no keys tensor", func(t *testing.T, path string) { foreign(t, path, nil, "keys") }, `"keys"`},
		{"keys of the wrong type", func(t *testing.T, path string) {
			file, _ := safetensors.ReadFile(saved(t, synthetic(4)))
			for i := range file.Tensors {
				if file.Tensors[i].Name == "keys" {
					file.Tensors[i] = safetensors.F32("keys", []int64{8}, make([]float32, 8))
				}
			}
			safetensors.WriteFile(path, file)
		}, "want I64"},
		{"fewer keys than images", func(t *testing.T, path string) {
			file, _ := safetensors.ReadFile(saved(t, synthetic(4)))
			for i := range file.Tensors {
				if file.Tensors[i].Name == "keys" {
					file.Tensors[i] = safetensors.I64("keys", []int64{3}, []int64{1, 2, 3})
				}
			}
			safetensors.WriteFile(path, file)
		}, "3 keys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fp.safetensors")
			tc.write(t, path)
			f, err := fingerprint.Load(path)
			if err == nil {
				t.Fatalf("Load returned %+v, want an error", f)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestSaveRefusesInvalid checks that Save validates before writing.
func TestSaveRefusesInvalid(t *testing.T) {
	cases := []struct {
		name    string
		corrupt func(f *fingerprint.Fingerprint)
	}{
		{"key outside the classes", func(f *fingerprint.Fingerprint) { f.Keys[1] = 10 }},
		{"negative label", func(f *fingerprint.Fingerprint) { f.Labels[0] = -1 }},
		{"missing key", func(f *fingerprint.Fingerprint) { f.Keys = f.Keys[:2] }},
		{"missing score", func(f *fingerprint.Fingerprint) { f.Confer = f.Confer[1:] }},
		{"short images", func(f *fingerprint.Fingerprint) { f.Images = f.Images[1:] }},
		{"short originals", func(f *fingerprint.Fingerprint) { f.Originals = f.Originals[1:] }},
		{"zero width", func(f *fingerprint.Fingerprint) { f.W = 0 }},
		{"negative count", func(f *fingerprint.Fingerprint) { f.N = -1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := synthetic(3)
			tc.corrupt(f)
			path := filepath.Join(t.TempDir(), "fp.safetensors")
			if err := f.Save(path); err == nil {
				t.Fatal("Save accepted an invalid fingerprint")
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("Save left a file behind: %v", err)
			}
		})
	}
}

// TestCanonicalForm: a file whose bytes differ from what Save writes for
// the same content is refused, even where the change is outside the
// committed content (an extra metadata key, header padding).
func TestCanonicalForm(t *testing.T) {
	f := synthetic(5)
	path := saved(t, f)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	file, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	file.Metadata["note"] = "harmless?"
	extra := filepath.Join(t.TempDir(), "extra.safetensors")
	if err := safetensors.WriteFile(extra, file); err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(raw[:8])
	padded := append(binary.LittleEndian.AppendUint64(nil, n+8), raw[8:8+n]...)
	padded = append(append(padded, []byte("        ")...), raw[8+n:]...)
	pad := filepath.Join(t.TempDir(), "pad.safetensors")
	if err := os.WriteFile(pad, padded, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]string{"an extra metadata key": extra, "more header padding": pad} {
		if _, err := fingerprint.Load(p); err == nil || !strings.Contains(err.Error(), "canonical") {
			t.Errorf("%s: Load gave %v, want a refusal for a non-canonical file", name, err)
		}
	}
	if _, err := fingerprint.Load(path); err != nil {
		t.Errorf("the file as saved: %v", err)
	}
}

// TestSign: a signed fingerprint keeps its signer and signature through
// its file; a flipped signature, another signer or a change after signing
// is refused; keys round-trip through their files.
func TestSign(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "defender.key")
	pub, err := fingerprint.GenerateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fingerprint.GenerateKey(keyPath); err == nil {
		t.Error("GenerateKey overwrote a key")
	}
	if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	key, err := fingerprint.ReadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	hexPub := hex.EncodeToString(pub)
	for _, in := range []string{hexPub, keyPath + ".pub", " " + hexPub + "\n"} {
		if got, err := fingerprint.ParsePublicKey(in); err != nil || got != hexPub {
			t.Errorf("ParsePublicKey(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := fingerprint.ParsePublicKey("abcd"); err == nil {
		t.Error("a short public key was accepted")
	}

	f := synthetic(6)
	if err := f.Sign(key); err != nil {
		t.Fatal(err)
	}
	path := saved(t, f)
	g, err := fingerprint.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if g.Signer != hexPub || g.Signature != f.Signature {
		t.Errorf("loaded signer %q signature %q", g.Signer, g.Signature)
	}
	// A change after signing: Save refuses until it is signed again.
	g.Meta.Eps = 0.5
	if err := g.Save(filepath.Join(dir, "changed.safetensors")); !errors.Is(err, fingerprint.ErrBadSignature) {
		t.Errorf("saving a changed signed fingerprint: %v", err)
	}
	// Another key's signature, or a flipped one, does not load.
	other, err := fingerprint.GenerateKey(filepath.Join(dir, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	file, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sig := []byte(file.Metadata["signature"])
	sig[0] = "01"[map[bool]int{true: 1, false: 0}[sig[0] == '0']]
	for name, md := range map[string]map[string]string{
		"another signer":    {"signer": hex.EncodeToString(other)},
		"flipped signature": {"signature": string(sig)},
	} {
		bad, _ := safetensors.ReadFile(path)
		for k, v := range md {
			bad.Metadata[k] = v
		}
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".safetensors")
		if err := safetensors.WriteFile(p, bad); err != nil {
			t.Fatal(err)
		}
		if _, err := fingerprint.Load(p); !errors.Is(err, fingerprint.ErrBadSignature) {
			t.Errorf("%s: Load gave %v, want ErrBadSignature", name, err)
		}
	}
}

func TestMetaMethod(t *testing.T) {
	for _, tc := range []struct {
		meta fingerprint.Meta
		want string
	}{
		{fingerprint.Meta{Attack: fingerprint.AttackCBIM, Loss: "geometric", Eps: 0.05}, "C-BIM, geometric loss, ε = 0.05"},
		{fingerprint.Meta{Attack: fingerprint.AttackCBIM, Loss: "linear", Eps: 0.15, Shift: 2, Noise: 0.02}, "C-BIM, linear loss, ε = 0.15, input diversity (shifts ≤ 2 px, noise SD 0.02)"},
		{fingerprint.Meta{Attack: fingerprint.AttackNatural}, "natural inputs the source misclassifies"},
		{fingerprint.Meta{Attack: "false-claim", Eps: 0.05}, "false-claim, ε = 0.05"},
		{fingerprint.Meta{Loss: "linear", Eps: 0.15}, "C-BIM, linear loss, ε = 0.15"}, // files from before Attack was recorded
	} {
		if got := tc.meta.Method(); got != tc.want {
			t.Errorf("Method() = %q, want %q", got, tc.want)
		}
	}
}
