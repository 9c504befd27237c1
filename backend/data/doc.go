// Package data loads the image classification datasets that Conferral
// fingerprints models on, splits them between defender and adversary, and
// serves them as minibatches in pixel space.
//
// Datasets are held in memory as uint8 pixels in NCHW order with int64 labels
// (see [Dataset]). Models receive images in pixel space [0,1]
// ([Dataset.Float32], [Dataset.Batches]); per-channel z-score normalisation
// (paper §6.1: "All inputs are z-score normalized to 0 mean and 1 standard
// deviation per channel") is the model's first layer, fed by
// [Dataset.Stats].
//
// Loaders, all pure Go:
//
//   - [LoadIDX], [FashionMNIST], [MNIST]: IDX files, gzip-compressed or raw.
//   - [CIFAR10]: the binary version of CIFAR-10 (data_batch_N.bin).
//   - [CINIC10]: the CINIC-10 PNG folder tree (paper §6.1).
//   - [ImageNet32]: the downsampled-ImageNet 32×32 batch files, as Python
//     pickles (read by a small built-in unpickler) or .npz archives
//     (paper §6.1).
//   - [Load]: any of them by name.
//
// [Split] and [SplitFraction] divide a dataset into disjoint, class-stratified
// defender and adversary parts (paper §6.1). No loader downloads anything: the
// files are installed by a package (Fashion-MNIST: Debian's
// dataset-fashion-mnist) or supplied by the user.
//
// Every error about a file names the file and says what is wrong with it;
// malformed input never panics. Format problems are reported as
// [*FormatError].
package data
