package nn

import "github.com/conferral/conferral/backend/torch"

// Classifier maps a batch of pixel-space NCHW images in [0, 1] to logits,
// on its device: a zoo Model, an imported ONNX model, an ensemble or a
// wrapper of one. Training, attacks, suspects, detectors and the
// prediction server all take one.
type Classifier interface {
	Forward(x *torch.Tensor) *torch.Tensor
	Device() torch.Device
}

var _ Classifier = (*Model)(nil)
