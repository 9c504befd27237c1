// ops.h names the op codes that the Go binding (ops.go, through cgo as
// C.TCH_OP_...) passes to the shim's dispatching functions (shim.cpp).
// Both sides spell the names, never the numbers, so they cannot drift apart:
// an op missing on either side fails to compile.
#ifndef CONFERRAL_TORCH_OPS_H
#define CONFERRAL_TORCH_OPS_H

// tch_unary's ops: one tensor in, one out.
typedef enum {
  TCH_OP_RELU,
  TCH_OP_RELU6,
  TCH_OP_SIGMOID,
  TCH_OP_TANH,
  TCH_OP_EXP,
  TCH_OP_LOG,
  TCH_OP_NEG,
  TCH_OP_ABS,
  TCH_OP_SIGN,
  TCH_OP_SQRT,
  TCH_OP_DETACH,
  TCH_OP_CONTIGUOUS,
  TCH_OP_CLONE,
  TCH_OP_SQUARE,
  TCH_OP_HARDSWISH,
  TCH_OP_HARDSIGMOID,
  TCH_OP_FLOOR,
  TCH_OP_ROUND,
  TCH_OP_LOG1P,
  TCH_OP_RECIPROCAL,
} tch_unary_op;

// tch_binary's ops: two tensors in (broadcast), one out.
typedef enum {
  TCH_OP_ADD,
  TCH_OP_SUB,
  TCH_OP_MUL,
  TCH_OP_DIV,
  TCH_OP_MATMUL,
  TCH_OP_MAXIMUM,
  TCH_OP_MINIMUM,
  TCH_OP_EQ,
  TCH_OP_GT,
  TCH_OP_LT,
  TCH_OP_POW,
  TCH_OP_GE,
  TCH_OP_LE,
  TCH_OP_NE,
} tch_binary_op;

// tch_scalar's ops: a tensor and a scalar in, one tensor out.
typedef enum {
  TCH_OP_ADD_SCALAR,
  TCH_OP_SUB_SCALAR,
  TCH_OP_MUL_SCALAR,
  TCH_OP_DIV_SCALAR,
  TCH_OP_POW_SCALAR,
  TCH_OP_EQ_SCALAR,
  TCH_OP_GT_SCALAR,
  TCH_OP_LT_SCALAR,
  TCH_OP_RSUB_SCALAR,  // s − t
  TCH_OP_LEAKY_RELU,   // the scalar is the negative slope
  TCH_OP_GE_SCALAR,
  TCH_OP_LE_SCALAR,
} tch_scalar_op;

// tch_reduce's ops: a reduction over dimensions (all of them when none are
// given; argmax and argmin take one).
typedef enum {
  TCH_OP_SUM,
  TCH_OP_MEAN,
  TCH_OP_AMAX,
  TCH_OP_AMIN,
  TCH_OP_ARGMAX,
  TCH_OP_ARGMIN,
  TCH_OP_LOGSUMEXP,
} tch_reduce_op;

// How a loss combines its per-example values (Go's Reduction).
typedef enum {
  TCH_REDUCTION_NONE,
  TCH_REDUCTION_MEAN,
  TCH_REDUCTION_SUM,
} tch_reduction;

// How tch_pad fills the border (Go's PadMode).
typedef enum {
  TCH_PAD_CONSTANT,
  TCH_PAD_REFLECT,
  TCH_PAD_REPLICATE,
} tch_pad_mode;

#endif
