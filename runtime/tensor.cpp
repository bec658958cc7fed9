// Tensor, Shape and Storage.
#include "runtime/tensor.h"

#include <cstring>
#include <ostream>
#include <sstream>
#include <vector>

#include "runtime/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace onn {

Shape::Shape(std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) push_back(d);
}

int64_t Shape::operator[](int i) const {
  ONN_ASSERT(i >= 0 && i < rank_, "dim ", i, " of rank-", rank_, " shape");
  return dims_[static_cast<size_t>(i)];
}

int64_t& Shape::operator[](int i) {
  ONN_ASSERT(i >= 0 && i < rank_, "dim ", i, " of rank-", rank_, " shape");
  return dims_[static_cast<size_t>(i)];
}

void Shape::push_back(int64_t d) {
  ONN_CHECK_ARG(rank_ < kMaxDims, "a tensor has at most ", kMaxDims, " dims");
  ONN_CHECK_ARG(d >= 0, "negative dim ", d, " in shape");
  dims_[static_cast<size_t>(rank_++)] = d;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) {
    ONN_CHECK_ARG(!__builtin_mul_overflow(n, dims_[static_cast<size_t>(i)], &n),
                  "shape ", str(), " has too many elements");
  }
  return n;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[static_cast<size_t>(i)]);
  }
  if (rank_ == 1) s += ",";
  return s + ")";
}

Storage::Storage(void* data, size_t nbytes, Device device, Allocator* allocator)
    : data_(data), nbytes_(nbytes), device_(device), allocator_(allocator) {}

Storage::Storage(void* data, size_t nbytes, Device device, std::shared_ptr<const void> keepalive)
    : data_(data), nbytes_(nbytes), device_(device), keepalive_(std::move(keepalive)) {}

Storage::~Storage() {
  if (allocator_ != nullptr) allocator_->deallocate(data_, nbytes_);
}

namespace detail {
void throw_dtype_mismatch(DType have, const char* want) {
  throw InvalidArgument(std::string("tensor of dtype ") + std::string(dtype_name(have)) +
                        " accessed as C++ type " + want);
}
}  // namespace detail

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return empty(shape, dtype, allocator_for(device));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Allocator& allocator) {
  Tensor t;
  const int64_t n = shape.numel();
  size_t nbytes = 0;
  ONN_CHECK_ARG(!__builtin_mul_overflow(static_cast<size_t>(n), dtype_size(dtype), &nbytes),
                "tensor of shape ", shape.str(), " is too large");
  void* p = allocator.allocate(nbytes);
  t.storage_ = std::make_shared<Storage>(p, nbytes, allocator.device(), &allocator);
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = allocator.device();
  return t;
}

namespace {
constexpr size_t kPackAlign = 256;

// Each spec's byte offset in a packed allocation; the last entry is the total.
std::vector<size_t> pack_offsets(const std::vector<std::pair<Shape, DType>>& specs) {
  std::vector<size_t> off{0};
  size_t at = 0;
  for (const auto& [shape, dtype] : specs) {
    size_t bytes = 0;
    ONN_CHECK_ARG(!__builtin_mul_overflow(static_cast<size_t>(shape.numel()), dtype_size(dtype), &bytes) &&
                      bytes <= SIZE_MAX - kPackAlign && at <= SIZE_MAX - (bytes + kPackAlign),
                  "packed tensors of shape ", shape.str(), " are too large");
    at += (bytes + kPackAlign - 1) / kPackAlign * kPackAlign;
    off.push_back(at);
  }
  return off;
}
}  // namespace

size_t Tensor::packed_bytes(const std::vector<std::pair<Shape, DType>>& specs) { return pack_offsets(specs).back(); }

std::vector<Tensor> Tensor::empty_packed(const std::vector<std::pair<Shape, DType>>& specs, Allocator& allocator) {
  const std::vector<size_t> off = pack_offsets(specs);
  if (specs.empty()) return {};
  const Tensor all = empty(Shape{static_cast<int64_t>(off.back())}, DType::u8, allocator);
  std::vector<Tensor> out;
  out.reserve(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) out.push_back(all.view(off[i], specs[i].first, specs[i].second));
  return out;
}

bool Tensor::overlaps(const Tensor& other) const {
  if (!shares_storage_with(other) || !defined() || nbytes() == 0 || other.nbytes() == 0) return false;
  return offset_ < other.offset_ + other.nbytes() && other.offset_ < offset_ + nbytes();
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_bytes(0);
  return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<const void> keepalive) {
  Tensor t;
  const size_t nbytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  t.storage_ = std::make_shared<Storage>(data, nbytes, Device::cpu(), std::move(keepalive));
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = Device::cpu();
  return t;
}

Tensor Tensor::from_floats(const Shape& shape, std::initializer_list<float> values) {
  ONN_CHECK_ARG(static_cast<int64_t>(values.size()) == shape.numel(), "from_floats: ", values.size(),
                " values for shape ", shape.str());
  Tensor t = empty(shape, DType::f32);
  std::memcpy(t.data(), values.begin(), values.size() * sizeof(float));
  return t;
}

int64_t Tensor::dim(int i) const {
  const int r = rank();
  const int j = i < 0 ? i + r : i;
  ONN_CHECK_ARG(j >= 0 && j < r, "dim ", i, " out of range for shape ", shape_.str());
  return shape_[j];
}

void* Tensor::data() const {
  ONN_CHECK_ARG(defined(), "access to an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  ONN_CHECK_ARG(defined() && rank() >= 1, "slice needs a tensor of rank >= 1");
  const int64_t rows = shape_[0];
  ONN_CHECK_ARG(begin >= 0 && begin <= end && end <= rows, "slice [", begin, ", ", end,
                ") out of range for shape ", shape_.str());
  Tensor t = *this;
  const size_t row_bytes = nbytes() / static_cast<size_t>(rows == 0 ? 1 : rows);
  t.offset_ = offset_ + static_cast<size_t>(begin) * (rows == 0 ? 0 : row_bytes);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::view(size_t byte_offset, const Shape& shape, DType dtype) const {
  ONN_CHECK_ARG(defined(), "view of an undefined tensor");
  const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  ONN_CHECK_ARG(byte_offset <= nbytes() && bytes <= nbytes() - byte_offset, "view of ", bytes, " bytes at ",
                byte_offset, " does not fit a tensor of ", nbytes(), " bytes");
  Tensor t = *this;
  t.offset_ = offset_ + byte_offset;
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::reshape(std::initializer_list<int64_t> dims) const {
  int infer = -1;
  int64_t known = 1;
  std::vector<int64_t> d(dims);
  for (size_t i = 0; i < d.size(); ++i) {
    if (d[i] == -1) {
      ONN_CHECK_ARG(infer < 0, "reshape: more than one -1");
      infer = static_cast<int>(i);
    } else {
      ONN_CHECK_ARG(d[i] >= 0, "reshape: negative dim ", d[i]);
      known *= d[i];
    }
  }
  if (infer >= 0) {
    ONN_CHECK_ARG(known != 0 && numel() % known == 0, "reshape: cannot infer -1 for ", numel(),
                  " elements from shape ", shape_.str());
    d[static_cast<size_t>(infer)] = numel() / known;
  }
  return reshape(Shape(d.begin(), d.end()));
}

Tensor Tensor::reshape(const Shape& shape) const {
  ONN_CHECK_ARG(defined(), "reshape of an undefined tensor");
  ONN_CHECK_ARG(shape.numel() == numel(), "reshape: shape ", shape.str(), " has ", shape.numel(),
                " elements, tensor ", shape_.str(), " has ", numel());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

static cuda::CopyKind copy_kind(Device dst, Device src) {
  if (dst.is_cuda() && src.is_cuda()) return cuda::CopyKind::device_to_device;
  if (dst.is_cuda()) return cuda::CopyKind::host_to_device;
  if (src.is_cuda()) return cuda::CopyKind::device_to_host;
  return cuda::CopyKind::host_to_host;
}

void Tensor::copy_from(const Tensor& src, Stream* stream) {
  ONN_CHECK_ARG(defined() && src.defined(), "copy_from: undefined tensor");
  ONN_CHECK_ARG(dtype_ == src.dtype_ && numel() == src.numel(), "copy_from: destination ",
                dtype_name(dtype_), shape_.str(), " and source ", dtype_name(src.dtype_), src.shape_.str(),
                " differ");
  const size_t n = nbytes();
  if (n == 0) return;
  if (device_.is_cpu() && src.device_.is_cpu()) {
    if (stream != nullptr) stream->synchronize();  // earlier queued work may write src
    std::memmove(data(), src.data(), n);
    return;
  }
  if (stream != nullptr) {
    cuda::memcpy_async(data(), src.data(), n, copy_kind(device_, src.device_), stream->cuda_stream());
    return;
  }
  // Without a stream the copy is synchronous with respect to all earlier device work: an op
  // may still be reading memory the caching allocator has just handed out again (op
  // temporaries are ordered on their context's compute stream only).
  const Device d = device_.is_cuda() ? device_ : src.device_;
  cuda::device_synchronize(d.index);
  Stream s(d);
  cuda::memcpy_async(data(), src.data(), n, copy_kind(device_, src.device_), s.cuda_stream());
  s.synchronize();
}

Tensor Tensor::to(Device device, Stream* stream) const {
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this, stream);
  return t;
}

Tensor Tensor::to_dtype(DType dtype) const {
  ONN_CHECK_ARG(device_.is_cpu(), "to_dtype runs on CPU tensors; this one is on ", device_.str());
  Tensor t = empty(shape_, dtype, Device::cpu());
  const size_t n = static_cast<size_t>(numel());
  if (dtype == dtype_) {
    if (n) std::memcpy(t.data(), data(), nbytes());
    return t;
  }
  const void* in = n ? data() : nullptr;
  void* out = n ? t.data() : nullptr;
  for (size_t i = 0; i < n; ++i) store_from_double(out, dtype, i, load_as_double(in, dtype_, i));
  return t;
}

void Tensor::fill_bytes(int byte, Stream* stream) {
  if (nbytes() == 0) return;
  if (device_.is_cpu()) {
    if (stream != nullptr) stream->synchronize();
    std::memset(data(), byte, nbytes());
    return;
  }
  if (stream != nullptr) {
    cuda::memset_async(data(), byte, nbytes(), stream->cuda_stream());
    return;
  }
  cuda::device_synchronize(device_.index);  // as in copy_from: after all earlier device work
  Stream s(device_);
  cuda::memset_async(data(), byte, nbytes(), s.cuda_stream());
  s.synchronize();
}

static void print_rec(std::ostream& os, const Tensor& t, const void* base, int d, size_t offset,
                      int max_items) {
  const int64_t n = t.shape()[d];
  size_t inner = 1;
  for (int k = d + 1; k < t.rank(); ++k) inner *= static_cast<size_t>(t.shape()[k]);
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (n > max_items && i == max_items / 2) {
      os << "..., ";
      i = n - max_items / 2;
    }
    if (d + 1 == t.rank()) {
      os << load_as_double(base, t.dtype(), offset + static_cast<size_t>(i));
    } else {
      print_rec(os, t, base, d + 1, offset + static_cast<size_t>(i) * inner, max_items);
    }
    if (i + 1 < n) os << ", ";
  }
  os << "]";
}

std::string Tensor::str(int max_items) const {
  std::ostringstream os;
  if (!defined()) return "Tensor(undefined)";
  os << "Tensor(shape=" << shape_.str() << ", dtype=" << dtype_name(dtype_) << ", device=" << device_.str()
     << ")\n";
  const Tensor host = device_.is_cpu() ? *this : to(Device::cpu());
  if (rank() == 0) {
    os << load_as_double(host.data(), dtype_, 0);
  } else if (numel() == 0) {
    os << "[]";
  } else {
    print_rec(os, host, host.data(), 0, 0, max_items < 2 ? 2 : max_items);
  }
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace onn
