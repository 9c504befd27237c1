package nn

import (
	"slices"

	"github.com/conferral/conferral/backend/torch"
)

// Arch builds a classifier's forward pass on normalised images, returning
// logits for the given number of classes. It computes only through this
// package's layer functions (Conv2d, Dense, BatchNorm, Relu, Add, Concat,
// MaxPool, GlobalAvgPool, …), which is what lets Model.Trace record it, and
// backend/onnx export it, without architecture-specific code: adding an
// architecture is a function here, its line in archs and its test.
type Arch func(c *Context, x *torch.Tensor, classes int64) *torch.Tensor

// archs lists the zoo. It is a function, not a package-level map, so no
// state is shared between callers.
func archs() map[string]Arch {
	return map[string]Arch{
		"cnn":         SmallCNN,
		"mlp":         MLP,
		"lenet":       LeNet,
		"resnet20":    ResNet(3),
		"resnet56":    ResNet(9),
		"vgg16":       VGG(vgg16()),
		"vgg19":       VGG(vgg19()),
		"densenet":    DenseNetBC(40, 12),
		"mobilenetv2": MobileNetV2,
		"widecnn":     WideCNN,
		"deepnarrow":  DeepNarrow,
		"mlpdrop":     MLPDrop,
	}
}

// Architectures returns the zoo's names, sorted.
func Architectures() []string {
	var names []string
	for n := range archs() {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// SmallCNN is three conv–batch-norm–ReLU–max-pool stages (32, 64, 128
// channels) and a two-layer head with dropout.
func SmallCNN(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
	for i, w := range []int64{32, 64, 128} {
		x = maxPool2(c, ConvBNReLU(c.Inf("block%d", i+1), x, w, 3, ConvOpts{Padding: -1}))
	}
	x = Relu(c, Dense(c.In("fc1"), Flatten(c, x), 256, true))
	x = Dropout(c, x, 0.25)
	return Dense(c.In("fc2"), x, classes, true)
}

// LeNet is LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling: two 5×5
// convolutions (6 and 16 channels, the first padded) and three dense layers
// (120, 84, classes). A cheap third family beside the CNN and the MLP.
func LeNet(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
	x = MaxPool(c, Relu(c, Conv2d(c.In("conv1"), x, 6, 5, ConvOpts{Padding: -1, Bias: true})), 2)
	x = MaxPool(c, Relu(c, Conv2d(c.In("conv2"), x, 16, 5, ConvOpts{Bias: true})), 2)
	x = Relu(c, Dense(c.In("fc1"), Flatten(c, x), 120, true))
	x = Relu(c, Dense(c.In("fc2"), x, 84, true))
	return Dense(c.In("fc3"), x, classes, true)
}

// MLP is a two-hidden-layer perceptron, a deliberately different
// architecture for studying transfer across model families.
func MLP(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
	x = Relu(c, Dense(c.In("fc1"), Flatten(c, x), 512, true))
	x = Dropout(c, x, 0.2)
	x = Relu(c, Dense(c.In("fc2"), x, 256, true))
	return Dense(c.In("fc3"), x, classes, true)
}

// ResNet returns the CIFAR ResNet of He et al. with 6n+2 layers (n = 3:
// ResNet-20, n = 9: ResNet-56): three stages of n basic blocks with 16, 32
// and 64 channels; projection shortcuts where the shape changes.
func ResNet(n int) Arch {
	return func(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
		x = ConvBNReLU(c.In("stem"), x, 16, 3, ConvOpts{Padding: -1})
		for stage, width := range []int64{16, 32, 64} {
			for b := range n {
				stride := int64(1)
				if stage > 0 && b == 0 {
					stride = 2
				}
				x = basicBlock(c.Inf("layer%d.%d", stage+1, b), x, width, stride)
			}
		}
		return Dense(c.In("fc"), GlobalAvgPool(c, x), classes, true)
	}
}

func basicBlock(c *Context, x *torch.Tensor, width, stride int64) *torch.Tensor {
	bn := func(name string) func(*torch.Tensor) *torch.Tensor {
		return func(t *torch.Tensor) *torch.Tensor { return BatchNorm(c.In(name), t) }
	}
	out := relu(c, then(Conv2d(c.In("conv1"), x, width, 3, ConvOpts{Stride: stride, Padding: -1}), bn("bn1")))
	out = then(then(Conv2d(c.In("conv2"), out, width, 3, ConvOpts{Padding: -1}), bn("bn2")), func(t *torch.Tensor) *torch.Tensor {
		if stride == 1 && x.Size(1) == width {
			return Add(c, t, x)
		}
		return then(then(Conv2d(c.In("short.conv"), x, width, 1, ConvOpts{Stride: stride}), bn("short.bn")), func(s *torch.Tensor) *torch.Tensor { return Add(c, t, s) })
	})
	return relu(c, out)
}

// VGG configurations: channel widths, 0 for a 2×2 max-pool.
func vgg16() []int64 {
	return []int64{64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0}
}

func vgg19() []int64 {
	return []int64{64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0}
}

// VGG is the CIFAR VGG with batch norm and one linear classifier.
func VGG(cfg []int64) Arch {
	return func(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
		for i, w := range cfg {
			if w == 0 {
				x = MaxPool(c, x, 2)
				continue
			}
			x = ConvBNReLU(c.Inf("features.%d", i), x, w, 3, ConvOpts{Padding: -1})
		}
		return Dense(c.In("fc"), GlobalAvgPool(c, x), classes, true)
	}
}

// DenseNetBC is DenseNet-BC (Huang et al.) with the given depth and growth
// rate k: three dense blocks of (depth−4)/6 bottleneck layers, transitions
// with compression 0.5.
func DenseNetBC(depth int, k int64) Arch {
	n := (depth - 4) / 6
	return func(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
		x = Conv2d(c.In("stem"), x, 2*k, 3, ConvOpts{Padding: -1})
		for b := range 3 {
			for i := range n {
				lc := c.Inf("block%d.%d", b+1, i)
				out := Conv2d(lc.In("conv1"), Relu(lc, BatchNorm(lc.In("bn1"), x)), 4*k, 1, ConvOpts{})
				out = Conv2d(lc.In("conv2"), Relu(lc, BatchNorm(lc.In("bn2"), out)), k, 3, ConvOpts{Padding: -1})
				x = Concat(lc, []*torch.Tensor{x, out}, 1)
			}
			if b < 2 {
				tc := c.Inf("trans%d", b+1)
				x = Conv2d(tc.In("conv"), Relu(tc, BatchNorm(tc.In("bn"), x)), x.Size(1)/2, 1, ConvOpts{})
				x = AvgPool(tc, x, 2)
			}
		}
		x = Relu(c, BatchNorm(c.In("bn"), x))
		return Dense(c.In("fc"), GlobalAvgPool(c, x), classes, true)
	}
}

// mobileNetV2Cfg is (expansion, out channels, blocks, stride) per stage,
// with CIFAR strides (the first two stages keep the resolution).
func mobileNetV2Cfg() [][4]int64 {
	return [][4]int64{{1, 16, 1, 1}, {6, 24, 2, 1}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}}
}

// MobileNetV2 (Sandler et al.), CIFAR variant: inverted residual blocks with
// ReLU6 and linear bottlenecks.
func MobileNetV2(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
	x = Relu6(c, BatchNorm(c.In("stem.bn"), Conv2d(c.In("stem.conv"), x, 32, 3, ConvOpts{Padding: -1})))
	for s, cfg := range mobileNetV2Cfg() {
		exp, out, blocks, stride := cfg[0], cfg[1], cfg[2], cfg[3]
		for b := range blocks {
			st := int64(1)
			if b == 0 {
				st = stride
			}
			x = invertedResidual(c.Inf("stage%d.%d", s+1, b), x, exp, out, st)
		}
	}
	x = Relu6(c, BatchNorm(c.In("head.bn"), Conv2d(c.In("head.conv"), x, 1280, 1, ConvOpts{})))
	return Dense(c.In("fc"), GlobalAvgPool(c, x), classes, true)
}

func invertedResidual(c *Context, x *torch.Tensor, expansion, out, stride int64) *torch.Tensor {
	in := x.Size(1)
	hidden := in * expansion
	h := x
	if expansion != 1 {
		h = Relu6(c, BatchNorm(c.In("expand.bn"), Conv2d(c.In("expand.conv"), h, hidden, 1, ConvOpts{})))
	}
	h = Relu6(c, BatchNorm(c.In("dw.bn"), Conv2d(c.In("dw.conv"), h, hidden, 3, ConvOpts{Stride: stride, Padding: -1, Groups: hidden})))
	h = BatchNorm(c.In("project.bn"), Conv2d(c.In("project.conv"), h, out, 1, ConvOpts{}))
	if stride == 1 && in == out {
		return Add(c, h, x)
	}
	return h
}

// Architectures unlike the paper's zoo, so that fleets and suspects differ
// in depth, width, normalisation and pooling and not only in four shapes.

// WideCNN is wide and shallow, without batch norm or pooling layers: a 5×5
// convolution of 128 channels with stride 2, ReLU, a 3×3 convolution of 128
// channels with stride 2, ReLU, global average pooling, dropout 0.3 and one
// dense layer. Its weights start in fan-in mode (no normalisation).
func WideCNN(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
	x = relu(c, Conv2d(c.In("conv1"), x, 128, 5, ConvOpts{Stride: 2, Padding: -1, Bias: true, Init: KaimingNormalFanIn}))
	x = relu(c, Conv2d(c.In("conv2"), x, 128, 3, ConvOpts{Stride: 2, Padding: -1, Bias: true, Init: KaimingNormalFanIn}))
	x = Dropout(c, GlobalAvgPool(c, x), 0.3)
	return Dense(c.In("fc"), x, classes, true)
}

// deepNarrowWidths are DeepNarrow's stage widths.
func deepNarrowWidths() []int64 { return []int64{16, 32, 48} }

// DeepNarrow is deep, narrow and free of normalisation: a 3×3 stem of 16
// channels and 2×2 average pooling, then three stages (16, 32 and 48
// channels) of two residual blocks each — conv–ReLU–conv scaled by a
// learnable α that starts at ½ (after SkipInit, De and Smith 2020, whose α
// starts at 0: a damped residual branch lets a deep network without batch
// norm train at ordinary rates; ½ learned faster than 0 here, with Adam
// most of all), added to the block's input, ReLU — with a 1×1 projection
// and 2×2 average pooling
// before the second and third stages, then global average pooling and one
// dense layer: fifteen convolutions, no batch statistics, weights in
// fan-in mode.
func DeepNarrow(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
	opts := func(k int64) ConvOpts {
		return ConvOpts{Padding: k / 2, Bias: true, Init: KaimingNormalFanIn}
	}
	x = avgPool2(c, relu(c, Conv2d(c.In("stem"), x, 16, 3, opts(3))))
	for s, w := range deepNarrowWidths() {
		if s > 0 {
			x = avgPool2(c, Conv2d(c.Inf("stage%d.proj", s+1), x, w, 1, opts(1)))
		}
		for b := range 2 {
			bc := c.Inf("stage%d.block%d", s+1, b+1)
			h := relu(bc, Conv2d(bc.In("conv1"), x, w, 3, opts(3)))
			h = then(h, func(t *torch.Tensor) *torch.Tensor { return Conv2d(bc.In("conv2"), t, w, 3, opts(3)) })
			alpha := bc.Param("alpha", []int64{1}, Constant(0.5))
			h = then(h, func(t *torch.Tensor) *torch.Tensor { return Mul(bc, t, alpha) })
			x = relu(bc, then(h, func(t *torch.Tensor) *torch.Tensor { return Add(bc, x, t) }))
		}
	}
	return Dense(c.In("fc"), GlobalAvgPool(c, x), classes, true)
}

// MLPDrop is a wide perceptron with heavy dropout: two hidden layers of
// 1024 units, ReLU, dropout 0.5 after each.
func MLPDrop(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
	x = Dropout(c, Relu(c, Dense(c.In("fc1"), Flatten(c, x), 1024, true)), 0.5)
	x = Dropout(c, Relu(c, Dense(c.In("fc2"), x, 1024, true)), 0.5)
	return Dense(c.In("fc3"), x, classes, true)
}
