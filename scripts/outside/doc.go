// Package outside holds tools that train suspects outside Conferral, with
// Debian's python3-torch, as an adversary would: steal.py trains models on
// the adversary's half of Fashion-MNIST (labelled by a source through a
// `conferral serve-model` endpoint, or by ground truth) and exports them to
// ONNX with a JSON manifest; conferral_split.py reproduces Conferral's
// defender/adversary split. Nothing here is used by Conferral at run time;
// the package's test holds the Python split to backend/data's.
package outside
