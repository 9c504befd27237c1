package server

import (
	"bytes"
	"testing"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
)

// TestTransferSetNotFromDataDir: with DataDir holding Fashion-MNIST, a
// Fashion-MNIST source's default Knockoff transfer set is MNIST's images,
// not the Fashion-MNIST files of DataDir read under MNIST's name (the two
// share their IDX file names).
func TestTransferSetNotFromDataDir(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir(), DataDir: data.DefaultFashionMNISTDir})
	src := nn.Spec{Dataset: "fashion-mnist", C: 1, H: 28, W: 28}
	got, err := ts.transferSet("", src, data.FashionMNISTClasses())
	if err != nil {
		t.Fatal(err)
	}
	mnist, err := data.Load("mnist", "", true)
	if err != nil {
		t.Fatal(err)
	}
	fashion, err := data.Load("fashion-mnist", data.DefaultFashionMNISTDir, true)
	if err != nil {
		t.Fatal(err)
	}
	first := func(d *data.Dataset) []byte { return d.Images[:d.C*d.H*d.W] }
	if bytes.Equal(first(got), first(fashion)) || !bytes.Equal(first(got), first(mnist)) {
		t.Errorf("the transfer set's first image is Fashion-MNIST's (%v) or not MNIST's (%v)", bytes.Equal(first(got), first(fashion)), !bytes.Equal(first(got), first(mnist)))
	}
}
