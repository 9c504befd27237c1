// shim.cpp implements shim.h over libtorch's C++ API. Keep it thin: models,
// losses and attacks are Go code on top of these generic ops.
#include "shim.h"

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

// A switch over one of ops.h's enums that misses a name does not compile.
#pragma GCC diagnostic error "-Wswitch"

namespace {

char *err(const char *msg) { return strdup(msg); }

#define TRY(...)                                                   \
  try {                                                            \
    __VA_ARGS__;                                                   \
    return nullptr;                                                \
  } catch (const c10::Error &e) {                                  \
    return err(e.what_without_backtrace());                        \
  } catch (const std::exception &e) {                              \
    return err(e.what());                                          \
  } catch (...) {                                                  \
    return err("unknown C++ exception");                           \
  }

at::Tensor &T(tch_tensor t) { return *static_cast<at::Tensor *>(t); }

tch_tensor wrap(at::Tensor t) { return new at::Tensor(std::move(t)); }

// opt returns the tensor or an undefined tensor for NULL.
c10::optional<at::Tensor> opt(tch_tensor t) {
  if (t == nullptr) return c10::nullopt;
  return T(t);
}

at::Tensor undef_or(tch_tensor t) { return t == nullptr ? at::Tensor() : T(t); }

at::ScalarType scalar_type(int dtype) {
  switch (dtype) {
    case TCH_FLOAT32: return at::kFloat;
    case TCH_INT64: return at::kLong;
    case TCH_BOOL: return at::kBool;
    case TCH_UINT8: return at::kByte;
  }
  throw std::invalid_argument("unknown dtype " + std::to_string(dtype));
}

int dtype_code(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return TCH_FLOAT32;
    case at::kLong: return TCH_INT64;
    case at::kBool: return TCH_BOOL;
    case at::kByte: return TCH_UINT8;
    default: return -1;
  }
}

at::Device device(int kind, int index) {
  if (kind == 0) return at::Device(at::kCPU);
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

at::IntArrayRef ints(const int64_t *p, int n) { return at::IntArrayRef(p, n); }

std::vector<at::Tensor> tensors(tch_tensor *ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; i++) v.push_back(T(ts[i]));
  return v;
}

at::Reduction::Reduction reduction(tch_reduction r) {
  switch (r) {
    case TCH_REDUCTION_NONE: return at::Reduction::None;
    case TCH_REDUCTION_MEAN: return at::Reduction::Mean;
    case TCH_REDUCTION_SUM: return at::Reduction::Sum;
  }
  throw std::invalid_argument("unknown reduction " + std::to_string(r));
}

// The op-code dispatchers. Each switch names every op of its ops.h enum and
// has no default, so -Wswitch (an error here) refuses one that misses a
// name; a code outside the enum reaches the throw.
at::Tensor unary(tch_unary_op op, const at::Tensor &a) {
  switch (op) {
    case TCH_OP_RELU: return at::relu(a);
    case TCH_OP_RELU6: return at::hardtanh(a, 0, 6);
    case TCH_OP_SIGMOID: return at::sigmoid(a);
    case TCH_OP_TANH: return at::tanh(a);
    case TCH_OP_EXP: return at::exp(a);
    case TCH_OP_LOG: return at::log(a);
    case TCH_OP_NEG: return at::neg(a);
    case TCH_OP_ABS: return at::abs(a);
    case TCH_OP_SIGN: return at::sign(a);
    case TCH_OP_SQRT: return at::sqrt(a);
    case TCH_OP_DETACH: return a.detach();
    case TCH_OP_CONTIGUOUS: return a.contiguous();
    case TCH_OP_CLONE: return a.clone();
    case TCH_OP_SQUARE: return at::square(a);
    case TCH_OP_HARDSWISH: return at::hardswish(a);
    case TCH_OP_HARDSIGMOID: return at::hardsigmoid(a);
    case TCH_OP_FLOOR: return at::floor(a);
    case TCH_OP_ROUND: return at::round(a);
    case TCH_OP_LOG1P: return at::log1p(a);
    case TCH_OP_RECIPROCAL: return at::reciprocal(a);
  }
  throw std::invalid_argument("unknown unary op " + std::to_string(op));
}

at::Tensor binary(tch_binary_op op, const at::Tensor &a, const at::Tensor &b) {
  switch (op) {
    case TCH_OP_ADD: return at::add(a, b);
    case TCH_OP_SUB: return at::sub(a, b);
    case TCH_OP_MUL: return at::mul(a, b);
    case TCH_OP_DIV: return at::div(a, b);
    case TCH_OP_MATMUL: return at::matmul(a, b);
    case TCH_OP_MAXIMUM: return at::maximum(a, b);
    case TCH_OP_MINIMUM: return at::minimum(a, b);
    case TCH_OP_EQ: return at::eq(a, b);
    case TCH_OP_GT: return at::gt(a, b);
    case TCH_OP_LT: return at::lt(a, b);
    case TCH_OP_POW: return at::pow(a, b);
    case TCH_OP_GE: return at::ge(a, b);
    case TCH_OP_LE: return at::le(a, b);
    case TCH_OP_NE: return at::ne(a, b);
  }
  throw std::invalid_argument("unknown binary op " + std::to_string(op));
}

at::Tensor scalar(tch_scalar_op op, const at::Tensor &a, double s) {
  switch (op) {
    case TCH_OP_ADD_SCALAR: return at::add(a, s);
    case TCH_OP_SUB_SCALAR: return at::sub(a, s);
    case TCH_OP_MUL_SCALAR: return at::mul(a, s);
    case TCH_OP_DIV_SCALAR: return at::div(a, s);
    case TCH_OP_POW_SCALAR: return at::pow(a, s);
    case TCH_OP_EQ_SCALAR: return at::eq(a, s);
    case TCH_OP_GT_SCALAR: return at::gt(a, s);
    case TCH_OP_LT_SCALAR: return at::lt(a, s);
    case TCH_OP_RSUB_SCALAR: return at::rsub(a, s);
    case TCH_OP_LEAKY_RELU: return at::leaky_relu(a, s);
    case TCH_OP_GE_SCALAR: return at::ge(a, s);
    case TCH_OP_LE_SCALAR: return at::le(a, s);
  }
  throw std::invalid_argument("unknown scalar op " + std::to_string(op));
}

// reduce over dims d (all of them when there are none; argmax and argmin
// take the first).
at::Tensor reduce(tch_reduce_op op, const at::Tensor &a, at::IntArrayRef d, bool k) {
  bool all = d.empty();
  switch (op) {
    case TCH_OP_SUM: return all && !k ? at::sum(a) : at::sum(a, d, k);
    case TCH_OP_MEAN: return all && !k ? at::mean(a) : at::mean(a, d, k);
    case TCH_OP_AMAX: return at::amax(a, d, k);
    case TCH_OP_AMIN: return at::amin(a, d, k);
    case TCH_OP_ARGMAX: return all ? at::argmax(a) : at::argmax(a, d[0], k);
    case TCH_OP_ARGMIN: return all ? at::argmin(a) : at::argmin(a, d[0], k);
    case TCH_OP_LOGSUMEXP: return at::logsumexp(a, d, k);
  }
  throw std::invalid_argument("unknown reduction op " + std::to_string(op));
}

// JobGenerator is a job's own source of randomness: one libtorch generator
// per device, each seeded with the job's seed when first used, so that two
// jobs with the same seed draw the same numbers whatever runs beside them.
struct JobGenerator {
  explicit JobGenerator(uint64_t s) : seed(s), cpu(at::detail::createCPUGenerator(s)) {}

  at::Generator on(const at::Device &d) {
    if (d.is_cpu()) return cpu;
    std::lock_guard<std::mutex> lock(mu);
    size_t i = d.has_index() ? static_cast<size_t>(d.index()) : 0;
    if (i >= others.size()) others.resize(i + 1);
    if (!others[i].defined()) {
      // A copy of the device's default generator, re-seeded: this needs no
      // header of the device's backend.
      at::Generator def =
          at::globalContext().defaultGenerator(at::Device(d.type(), static_cast<c10::DeviceIndex>(i)));
      at::Generator g;
      {
        std::lock_guard<std::mutex> dl(def.mutex());
        g = def.clone();
      }
      g.set_current_seed(seed);
      others[i] = g;
    }
    return others[i];
  }

  uint64_t seed;
  at::Generator cpu;
  std::mutex mu;
  std::vector<at::Generator> others;  // CUDA devices by index
};

using JobGen = std::shared_ptr<JobGenerator>;

// The calling thread's job generator, if any.
thread_local JobGen current;

// gen is the generator for a draw on device d: the thread's job generator,
// or none (libtorch's global one).
c10::optional<at::Generator> gen(const at::Device &d) {
  if (!current) return c10::nullopt;
  return current->on(d);
}

// job_dropout is at::dropout drawing from the thread's job generator: ATen's own
// computation for tensors off the GPU (the same mask for the same generator
// state), which at::dropout, taking no generator, cannot be told to use.
at::Tensor job_dropout(const at::Tensor &x, double p, bool train) {
  if (!current) return at::dropout(x, p, train);
  TORCH_CHECK(p >= 0 && p <= 1, "dropout probability has to be between 0 and 1, but got ", p);
  if (p == 0 || !train || x.numel() == 0) return x;
  if (p == 1) return x.mul(at::zeros({}, x.options()));
  auto noise = at::empty_like(x, LEGACY_CONTIGUOUS_MEMORY_FORMAT);
  noise.bernoulli_(1 - p, gen(x.device()));
  noise.div_(1 - p);
  return x.mul(noise);
}

const char *pad_mode(tch_pad_mode m) {
  switch (m) {
    case TCH_PAD_CONSTANT: return "constant";
    case TCH_PAD_REFLECT: return "reflect";
    case TCH_PAD_REPLICATE: return "replicate";
  }
  throw std::invalid_argument("unknown pad mode " + std::to_string(m));
}

}  // namespace

extern "C" {

char *tch_cuda_device_count(int *out) { TRY(*out = static_cast<int>(torch::cuda::device_count())) }
char *tch_set_num_threads(int n) { TRY(at::set_num_threads(n)) }
int tch_get_num_threads(void) { return at::get_num_threads(); }
char *tch_manual_seed(uint64_t seed) { TRY(torch::manual_seed(seed)) }

char *tch_generator_new(uint64_t seed, tch_generator *out) {
  TRY(*out = new JobGen(std::make_shared<JobGenerator>(seed)))
}

void tch_generator_free(tch_generator g) { delete static_cast<JobGen *>(g); }

tch_generator tch_swap_generator(tch_generator g) {
  JobGen prev = std::move(current);
  current = g == nullptr ? nullptr : *static_cast<JobGen *>(g);
  return prev ? new (std::nothrow) JobGen(std::move(prev)) : nullptr;
}
int tch_grad_enabled(void) { return at::GradMode::is_enabled() ? 1 : 0; }
void tch_set_grad_enabled(int on) { at::GradMode::set_enabled(on != 0); }

void tch_free(tch_tensor t) { delete static_cast<at::Tensor *>(t); }

char *tch_from_data(const void *data, const int64_t *shape, int ndim, int dtype, int device_kind,
                    int device_index, tch_tensor *out) {
  TRY({
    auto opts = at::TensorOptions().dtype(scalar_type(dtype));
    auto t = torch::from_blob(const_cast<void *>(data), ints(shape, ndim), opts).clone();
    if (device_kind != 0) t = t.to(device(device_kind, device_index));
    *out = wrap(std::move(t));
  })
}

char *tch_copy_data(tch_tensor t, void *dst, int64_t nbytes) {
  TRY({
    auto c = T(t).detach().to(at::kCPU).contiguous();
    int64_t have = c.numel() * static_cast<int64_t>(c.element_size());
    if (have != nbytes)
      throw std::invalid_argument("copy of " + std::to_string(have) + " bytes into a buffer of " +
                                  std::to_string(nbytes));
    if (nbytes > 0) std::memcpy(dst, c.data_ptr(), nbytes);
  })
}

char *tch_shape(tch_tensor t, int64_t *shape, int max, int *ndim) {
  TRY({
    auto s = T(t).sizes();
    *ndim = static_cast<int>(s.size());
    for (int i = 0; i < *ndim && i < max; i++) shape[i] = s[i];
  })
}

char *tch_info(tch_tensor t, int *dtype, int *device_kind, int *device_index, int *requires_grad,
               int *defined) {
  TRY({
    auto &x = T(t);
    *defined = x.defined() ? 1 : 0;
    if (!x.defined()) return nullptr;
    *dtype = dtype_code(x.scalar_type());
    *device_kind = x.is_cuda() ? 1 : 0;
    *device_index = x.is_cuda() ? x.device().index() : 0;
    *requires_grad = x.requires_grad() ? 1 : 0;
  })
}

char *tch_item(tch_tensor t, double *out) { TRY(*out = T(t).item<double>()) }

char *tch_full(const int64_t *shape, int ndim, double value, int dtype, int device_kind,
               int device_index, tch_tensor *out) {
  TRY(*out = wrap(at::full(ints(shape, ndim), value,
                           at::TensorOptions()
                               .dtype(scalar_type(dtype))
                               .device(device(device_kind, device_index)))))
}

char *tch_rand(const int64_t *shape, int ndim, int normal, int device_kind, int device_index,
               tch_tensor *out) {
  TRY({
    auto o = at::TensorOptions().dtype(at::kFloat).device(device(device_kind, device_index));
    auto g = gen(o.device());
    *out = wrap(normal ? at::randn(ints(shape, ndim), g, o) : at::rand(ints(shape, ndim), g, o));
  })
}

char *tch_randperm(int64_t n, int device_kind, int device_index, tch_tensor *out) {
  TRY({
    auto d = device(device_kind, device_index);
    *out = wrap(at::randperm(n, gen(d), at::TensorOptions().dtype(at::kLong).device(d)));
  })
}

char *tch_to(tch_tensor t, int dtype, int device_kind, int device_index, tch_tensor *out) {
  TRY(*out = wrap(T(t).to(device(device_kind, device_index), scalar_type(dtype))))
}

char *tch_copy_(tch_tensor dst, tch_tensor src) {
  TRY({
    at::NoGradGuard guard;
    T(dst).copy_(T(src));
  })
}

char *tch_set_requires_grad(tch_tensor t, int on) { TRY(T(t).set_requires_grad(on != 0)) }

char *tch_grad(tch_tensor t, tch_tensor *out) {
  TRY({
    auto g = T(t).grad();
    *out = g.defined() ? wrap(g) : nullptr;
  })
}

char *tch_zero_grad(tch_tensor t) { TRY(T(t).mutable_grad().reset()) }

char *tch_backward(tch_tensor t) { TRY(T(t).backward()) }

char *tch_autograd_grad(tch_tensor *outputs, int nout, tch_tensor *inputs, int nin,
                        tch_tensor *grads) {
  TRY({
    auto g = torch::autograd::grad(tensors(outputs, nout), tensors(inputs, nin), {},
                                   /*retain_graph=*/c10::nullopt, /*create_graph=*/false,
                                   /*allow_unused=*/true);
    for (int i = 0; i < nin; i++) grads[i] = g[i].defined() ? wrap(g[i]) : nullptr;
  })
}

char *tch_unary(tch_unary_op op, tch_tensor x, tch_tensor *out) {
  TRY(*out = wrap(unary(op, T(x))))
}

char *tch_binary(tch_binary_op op, tch_tensor x, tch_tensor y, tch_tensor *out) {
  TRY(*out = wrap(binary(op, T(x), T(y))))
}

char *tch_scalar(tch_scalar_op op, tch_tensor x, double s, tch_tensor *out) {
  TRY(*out = wrap(scalar(op, T(x), s)))
}

char *tch_reduce(tch_reduce_op op, tch_tensor x, const int64_t *dims, int ndims, int keepdim,
                 tch_tensor *out) {
  TRY(*out = wrap(reduce(op, T(x), ints(dims, ndims), keepdim != 0)))
}

char *tch_clamp(tch_tensor x, double lo, double hi, int has_lo, int has_hi, tch_tensor *out) {
  TRY({
    c10::optional<at::Scalar> l, h;
    if (has_lo) l = lo;
    if (has_hi) h = hi;
    *out = wrap(at::clamp(T(x), l, h));
  })
}

char *tch_clamp_t(tch_tensor x, tch_tensor lo, tch_tensor hi, tch_tensor *out) {
  TRY(*out = wrap(at::clamp(T(x), opt(lo), opt(hi))))
}

char *tch_where(tch_tensor cond, tch_tensor a, tch_tensor b, tch_tensor *out) {
  TRY(*out = wrap(at::where(T(cond), T(a), T(b))))
}

char *tch_reshape(tch_tensor x, const int64_t *shape, int ndim, tch_tensor *out) {
  TRY(*out = wrap(at::reshape(T(x), ints(shape, ndim))))
}

char *tch_permute(tch_tensor x, const int64_t *dims, int ndim, tch_tensor *out) {
  TRY(*out = wrap(T(x).permute(ints(dims, ndim))))
}

char *tch_expand(tch_tensor x, const int64_t *shape, int ndim, tch_tensor *out) {
  TRY(*out = wrap(T(x).expand(ints(shape, ndim))))
}

char *tch_narrow(tch_tensor x, int64_t dim, int64_t start, int64_t length, tch_tensor *out) {
  TRY(*out = wrap(T(x).narrow(dim, start, length)))
}

char *tch_index_select(tch_tensor x, int64_t dim, tch_tensor index, tch_tensor *out) {
  TRY(*out = wrap(at::index_select(T(x), dim, T(index))))
}

char *tch_gather(tch_tensor x, int64_t dim, tch_tensor index, tch_tensor *out) {
  TRY(*out = wrap(at::gather(T(x), dim, T(index))))
}

char *tch_cat(tch_tensor *xs, int n, int64_t dim, tch_tensor *out) {
  TRY(*out = wrap(at::cat(tensors(xs, n), dim)))
}

char *tch_one_hot(tch_tensor x, int64_t classes, tch_tensor *out) {
  TRY(*out = wrap(at::one_hot(T(x), classes)))
}

char *tch_topk(tch_tensor x, int64_t k, int64_t dim, tch_tensor *values, tch_tensor *indices) {
  TRY({
    auto r = at::topk(T(x), k, dim);
    *values = wrap(std::get<0>(r));
    *indices = wrap(std::get<1>(r));
  })
}

char *tch_conv2d(tch_tensor x, tch_tensor w, tch_tensor b, const int64_t *stride,
                 const int64_t *padding, const int64_t *dilation, int64_t groups,
                 tch_tensor *out) {
  TRY(*out = wrap(at::conv2d(T(x), T(w), opt(b), ints(stride, 2), ints(padding, 2),
                             ints(dilation, 2), groups)))
}

char *tch_conv_transpose2d(tch_tensor x, tch_tensor w, tch_tensor b, const int64_t *stride,
                           const int64_t *padding, const int64_t *output_padding,
                           const int64_t *dilation, int64_t groups, tch_tensor *out) {
  TRY(*out = wrap(at::conv_transpose2d(T(x), T(w), opt(b), ints(stride, 2), ints(padding, 2),
                                       ints(output_padding, 2), groups, ints(dilation, 2))))
}

char *tch_batch_norm(tch_tensor x, tch_tensor w, tch_tensor b, tch_tensor mean, tch_tensor var,
                     int training, double momentum, double eps, tch_tensor *out) {
  TRY(*out = wrap(at::batch_norm(T(x), opt(w), opt(b), opt(mean), opt(var), training != 0,
                                 momentum, eps, /*cudnn_enabled=*/true)))
}

char *tch_linear(tch_tensor x, tch_tensor w, tch_tensor b, tch_tensor *out) {
  TRY(*out = wrap(at::linear(T(x), T(w), opt(b))))
}

char *tch_max_pool2d(tch_tensor x, const int64_t *kernel, const int64_t *stride,
                     const int64_t *padding, const int64_t *dilation, int ceil_mode,
                     tch_tensor *out) {
  TRY(*out = wrap(at::max_pool2d(T(x), ints(kernel, 2), ints(stride, 2), ints(padding, 2),
                                 ints(dilation, 2), ceil_mode != 0)))
}

char *tch_avg_pool2d(tch_tensor x, const int64_t *kernel, const int64_t *stride,
                     const int64_t *padding, int ceil_mode, int count_include_pad,
                     tch_tensor *out) {
  TRY(*out = wrap(at::avg_pool2d(T(x), ints(kernel, 2), ints(stride, 2), ints(padding, 2),
                                 ceil_mode != 0, count_include_pad != 0)))
}

char *tch_adaptive_avg_pool2d(tch_tensor x, const int64_t *size, tch_tensor *out) {
  TRY(*out = wrap(at::adaptive_avg_pool2d(T(x), ints(size, 2))))
}

char *tch_dropout(tch_tensor x, double p, int training, tch_tensor *out) {
  TRY(*out = wrap(job_dropout(T(x), p, training != 0)))
}

char *tch_softmax(tch_tensor x, int64_t dim, int log, tch_tensor *out) {
  TRY(*out = wrap(log ? at::log_softmax(T(x), dim) : at::softmax(T(x), dim)))
}

char *tch_cross_entropy(tch_tensor logits, tch_tensor target, tch_reduction r, double label_smoothing,
                        tch_tensor *out) {
  TRY(*out = wrap(at::cross_entropy_loss(T(logits), T(target), c10::nullopt, reduction(r), -100,
                                         label_smoothing)))
}

char *tch_kl_div(tch_tensor logp, tch_tensor target, tch_reduction r, int log_target, tch_tensor *out) {
  TRY(*out = wrap(at::kl_div(T(logp), T(target), reduction(r), log_target != 0)))
}

char *tch_pad(tch_tensor x, const int64_t *pad, int npad, tch_pad_mode mode, double value,
              tch_tensor *out) {
  TRY({
    c10::optional<double> v;
    if (mode == TCH_PAD_CONSTANT) v = value;
    *out = wrap(at::pad(T(x), ints(pad, npad), pad_mode(mode), v));
  })
}

// Optimizers are libtorch's own, so their updates are PyTorch's.
char *tch_sgd(tch_tensor *params, int n, double lr, double momentum, double dampening,
              double weight_decay, int nesterov, tch_optim *out) {
  TRY(*out = new torch::optim::SGD(tensors(params, n), torch::optim::SGDOptions(lr)
                                                           .momentum(momentum)
                                                           .dampening(dampening)
                                                           .weight_decay(weight_decay)
                                                           .nesterov(nesterov != 0)))
}

char *tch_adam(tch_tensor *params, int n, double lr, double beta1, double beta2, double eps,
               double weight_decay, int amsgrad, tch_optim *out) {
  TRY(*out = new torch::optim::Adam(tensors(params, n), torch::optim::AdamOptions(lr)
                                                            .betas({beta1, beta2})
                                                            .eps(eps)
                                                            .weight_decay(weight_decay)
                                                            .amsgrad(amsgrad != 0)))
}

char *tch_adamw(tch_tensor *params, int n, double lr, double beta1, double beta2, double eps,
                double weight_decay, int amsgrad, tch_optim *out) {
  TRY(*out = new torch::optim::AdamW(tensors(params, n), torch::optim::AdamWOptions(lr)
                                                              .betas({beta1, beta2})
                                                              .eps(eps)
                                                              .weight_decay(weight_decay)
                                                              .amsgrad(amsgrad != 0)))
}

char *tch_optim_step(tch_optim o) { TRY(static_cast<torch::optim::Optimizer *>(o)->step()) }

char *tch_optim_zero_grad(tch_optim o) {
  TRY({
    // Set gradients to none, as PyTorch's zero_grad(set_to_none=True) does.
    for (auto &g : static_cast<torch::optim::Optimizer *>(o)->param_groups())
      for (auto &p : g.params()) p.mutable_grad().reset();
  })
}

char *tch_optim_set_lr(tch_optim o, double lr) {
  TRY({
    for (auto &g : static_cast<torch::optim::Optimizer *>(o)->param_groups()) {
      auto &opts = g.options();
      if (auto *s = dynamic_cast<torch::optim::SGDOptions *>(&opts)) s->lr(lr);
      else if (auto *a = dynamic_cast<torch::optim::AdamOptions *>(&opts)) a->lr(lr);
      else if (auto *w = dynamic_cast<torch::optim::AdamWOptions *>(&opts)) w->lr(lr);
      else throw std::invalid_argument("optimizer has no learning rate");
    }
  })
}

void tch_optim_free(tch_optim o) { delete static_cast<torch::optim::Optimizer *>(o); }

}  // extern "C"
