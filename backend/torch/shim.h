// shim.h is the C face of libtorch used by the Go binding. Every function
// that can fail returns NULL on success or a malloc'ed error message that the
// caller frees; results are written through out-parameters. No C++ exception
// crosses this boundary.
#ifndef CONFERRAL_TORCH_SHIM_H
#define CONFERRAL_TORCH_SHIM_H

#include <stdint.h>

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void *tch_tensor;
typedef void *tch_optim;
typedef void *tch_generator;

// Dtypes (match Go's DType).
enum { TCH_FLOAT32 = 0, TCH_INT64 = 1, TCH_BOOL = 2, TCH_UINT8 = 3 };

// Devices: kind 0 is CPU, 1 is CUDA.
char *tch_cuda_device_count(int *out);
char *tch_set_num_threads(int n);
int tch_get_num_threads(void);
char *tch_manual_seed(uint64_t seed);

// Generators of a job's own. While tch_swap_generator has set one on a
// thread, tch_rand, tch_randperm and tch_dropout there draw from it (from
// libtorch's global generators otherwise). tch_swap_generator returns the
// thread's previous generator as a new handle (NULL: the global ones); every
// handle is freed with tch_generator_free, and a generator lives while a
// thread uses it.
char *tch_generator_new(uint64_t seed, tch_generator *out);
void tch_generator_free(tch_generator g);
tch_generator tch_swap_generator(tch_generator g);
int tch_grad_enabled(void);
void tch_set_grad_enabled(int on);

// Lifetime and data.
void tch_free(tch_tensor t);
char *tch_from_data(const void *data, const int64_t *shape, int ndim, int dtype,
                    int device_kind, int device_index, tch_tensor *out);
char *tch_copy_data(tch_tensor t, void *dst, int64_t nbytes);
char *tch_shape(tch_tensor t, int64_t *shape, int max, int *ndim);
char *tch_info(tch_tensor t, int *dtype, int *device_kind, int *device_index,
               int *requires_grad, int *defined);
char *tch_item(tch_tensor t, double *out);
char *tch_full(const int64_t *shape, int ndim, double value, int dtype,
               int device_kind, int device_index, tch_tensor *out);
char *tch_rand(const int64_t *shape, int ndim, int normal, int device_kind,
               int device_index, tch_tensor *out);
char *tch_randperm(int64_t n, int device_kind, int device_index, tch_tensor *out);
char *tch_to(tch_tensor t, int dtype, int device_kind, int device_index, tch_tensor *out);
char *tch_copy_(tch_tensor dst, tch_tensor src);

// Autograd.
char *tch_set_requires_grad(tch_tensor t, int on);
char *tch_grad(tch_tensor t, tch_tensor *out);
char *tch_zero_grad(tch_tensor t);
char *tch_backward(tch_tensor t);
char *tch_autograd_grad(tch_tensor *outputs, int nout, tch_tensor *inputs, int nin,
                        tch_tensor *grads);

// Elementwise and reductions, selected by an op code of ops.h.
char *tch_unary(tch_unary_op op, tch_tensor x, tch_tensor *out);
char *tch_binary(tch_binary_op op, tch_tensor a, tch_tensor b, tch_tensor *out);
char *tch_scalar(tch_scalar_op op, tch_tensor a, double s, tch_tensor *out);
char *tch_reduce(tch_reduce_op op, tch_tensor x, const int64_t *dims, int ndims, int keepdim,
                 tch_tensor *out);
char *tch_clamp(tch_tensor x, double lo, double hi, int has_lo, int has_hi, tch_tensor *out);
char *tch_clamp_t(tch_tensor x, tch_tensor lo, tch_tensor hi, tch_tensor *out);
char *tch_where(tch_tensor cond, tch_tensor a, tch_tensor b, tch_tensor *out);

// Shapes.
char *tch_reshape(tch_tensor x, const int64_t *shape, int ndim, tch_tensor *out);
char *tch_permute(tch_tensor x, const int64_t *dims, int ndim, tch_tensor *out);
char *tch_expand(tch_tensor x, const int64_t *shape, int ndim, tch_tensor *out);
char *tch_narrow(tch_tensor x, int64_t dim, int64_t start, int64_t length, tch_tensor *out);
char *tch_index_select(tch_tensor x, int64_t dim, tch_tensor index, tch_tensor *out);
char *tch_gather(tch_tensor x, int64_t dim, tch_tensor index, tch_tensor *out);
char *tch_cat(tch_tensor *xs, int n, int64_t dim, tch_tensor *out);
char *tch_one_hot(tch_tensor x, int64_t classes, tch_tensor *out);
char *tch_topk(tch_tensor x, int64_t k, int64_t dim, tch_tensor *values, tch_tensor *indices);

// Neural-network functions.
char *tch_conv2d(tch_tensor x, tch_tensor w, tch_tensor b, const int64_t *stride,
                 const int64_t *padding, const int64_t *dilation, int64_t groups,
                 tch_tensor *out);
char *tch_conv_transpose2d(tch_tensor x, tch_tensor w, tch_tensor b, const int64_t *stride,
                           const int64_t *padding, const int64_t *output_padding,
                           const int64_t *dilation, int64_t groups, tch_tensor *out);
char *tch_batch_norm(tch_tensor x, tch_tensor w, tch_tensor b, tch_tensor mean,
                     tch_tensor var, int training, double momentum, double eps,
                     tch_tensor *out);
char *tch_linear(tch_tensor x, tch_tensor w, tch_tensor b, tch_tensor *out);
char *tch_max_pool2d(tch_tensor x, const int64_t *kernel, const int64_t *stride,
                     const int64_t *padding, const int64_t *dilation, int ceil_mode,
                     tch_tensor *out);
char *tch_avg_pool2d(tch_tensor x, const int64_t *kernel, const int64_t *stride,
                     const int64_t *padding, int ceil_mode, int count_include_pad,
                     tch_tensor *out);
char *tch_adaptive_avg_pool2d(tch_tensor x, const int64_t *size, tch_tensor *out);
char *tch_dropout(tch_tensor x, double p, int training, tch_tensor *out);
char *tch_softmax(tch_tensor x, int64_t dim, int log, tch_tensor *out);
char *tch_cross_entropy(tch_tensor logits, tch_tensor target, tch_reduction reduction,
                        double label_smoothing, tch_tensor *out);
char *tch_kl_div(tch_tensor logp, tch_tensor target, tch_reduction reduction, int log_target,
                 tch_tensor *out);
char *tch_pad(tch_tensor x, const int64_t *pad, int npad, tch_pad_mode mode, double value,
              tch_tensor *out);

// Optimizers.
char *tch_sgd(tch_tensor *params, int n, double lr, double momentum, double dampening,
              double weight_decay, int nesterov, tch_optim *out);
char *tch_adam(tch_tensor *params, int n, double lr, double beta1, double beta2,
               double eps, double weight_decay, int amsgrad, tch_optim *out);
char *tch_adamw(tch_tensor *params, int n, double lr, double beta1, double beta2,
                double eps, double weight_decay, int amsgrad, tch_optim *out);
char *tch_optim_step(tch_optim o);
char *tch_optim_zero_grad(tch_optim o);
char *tch_optim_set_lr(tch_optim o, double lr);
void tch_optim_free(tch_optim o);

#ifdef __cplusplus
}
#endif

#endif
