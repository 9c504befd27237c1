package data

import (
	"fmt"
	"strings"
)

// Names returns the canonical dataset names that [Load] accepts.
func Names() []string {
	return []string{"fashion-mnist", "mnist", "cifar10", "cinic10", "imagenet32"}
}

// CanonicalName returns the canonical form of a dataset name: lower case,
// with "fashionmnist"/"fashion_mnist"/"fashion", "cifar-10", "cinic-10" and
// "imagenet-32" accepted as spellings. It returns "" for an unknown name.
func CanonicalName(name string) string {
	s := strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.ToLower(name))
	switch s {
	case "fashionmnist", "fashion", "fmnist":
		return "fashion-mnist"
	case "mnist":
		return "mnist"
	case "cifar10":
		return "cifar10"
	case "cinic10", "cinic":
		return "cinic10"
	case "imagenet32", "imagenet32x32":
		return "imagenet32"
	}
	return ""
}

// Load loads the training or test part of a dataset by name (see
// [CanonicalName]) from dir. An empty dir means the default location where
// the dataset has one (Fashion-MNIST, MNIST); the others need a dir. For
// CINIC-10, train selects the "train" split and !train the "test" split (use
// [CINIC10] for "valid"); for ImageNet32, !train selects the validation
// files.
func Load(name, dir string, train bool) (*Dataset, error) {
	switch CanonicalName(name) {
	case "fashion-mnist":
		return FashionMNIST(dir, train)
	case "mnist":
		return MNIST(dir, train)
	case "cifar10":
		return CIFAR10(dir, train)
	case "cinic10":
		split := "test"
		if train {
			split = "train"
		}
		return CINIC10(dir, split)
	case "imagenet32":
		return ImageNet32(dir, train)
	}
	return nil, fmt.Errorf("data: unknown dataset %q (known: %s)", name, strings.Join(Names(), ", "))
}
