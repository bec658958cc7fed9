// Tensor: a shape (up to 5 dims), a dtype, a device and contiguous row-major storage that
// views (slice along dim 0, reshape) share. Copies across devices go through a Stream.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/device.h"
#include "runtime/dtype.h"

namespace onn {

class Stream;

inline constexpr int kMaxDims = 5;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  template <typename It>
  Shape(It begin, It end) {
    for (; begin != end; ++begin) push_back(static_cast<int64_t>(*begin));
  }

  int rank() const { return rank_; }
  int64_t operator[](int i) const;
  int64_t& operator[](int i);
  // Throws InvalidArgument past kMaxDims or for a negative dim.
  void push_back(int64_t d);
  // Product of dims (1 for rank 0); throws InvalidArgument on int64 overflow.
  int64_t numel() const;
  const int64_t* begin() const { return dims_.data(); }
  const int64_t* end() const { return dims_.data() + rank_; }
  std::string str() const;  // "(2, 3, 4)"

  friend bool operator==(const Shape& a, const Shape& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[static_cast<size_t>(i)] != b.dims_[static_cast<size_t>(i)]) return false;
    return true;
  }

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

// Owns one allocation. deleter_ holds extra owners (e.g. an mmap) for non-owning storage.
class Storage {
 public:
  Storage(void* data, size_t nbytes, Device device, Allocator* allocator);
  Storage(void* data, size_t nbytes, Device device, std::shared_ptr<const void> keepalive);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  Allocator* allocator_ = nullptr;
  std::shared_ptr<const void> keepalive_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // Uninitialised memory from allocator_for(device) (or the given allocator).
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor empty(const Shape& shape, DType dtype, Allocator& allocator);
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  // Tensors of the given shapes and dtypes carved from one allocation, each at a 256-byte
  // aligned offset. Many small tensors that live and die together (a LoRA adapter's A and B
  // matrices, their gradients, AdamW's moments) then cost one block of the caching allocator
  // instead of one size class each: a 2.2 MiB tensor alone is held as 4 MiB.
  static std::vector<Tensor> empty_packed(const std::vector<std::pair<Shape, DType>>& specs, Allocator& allocator);
  // The bytes empty_packed asks the allocator for.
  static size_t packed_bytes(const std::vector<std::pair<Shape, DType>>& specs);
  // A CPU tensor over memory owned elsewhere; keepalive is held as long as any view lives.
  static Tensor wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<const void> keepalive);
  // A CPU f32 tensor with the given values (tests, small constants).
  static Tensor from_floats(const Shape& shape, std::initializer_list<float> values);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  int64_t dim(int i) const;  // negative i counts from the end
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* data() const;
  // Typed pointer; throws InvalidArgument when T does not match dtype().
  template <typename T>
  T* data_as() const;

  // Rows [begin, end) along dim 0, sharing storage.
  Tensor slice(int64_t begin, int64_t end) const;
  // A tensor of `shape` and `dtype` over this one's bytes from `byte_offset` (buffers carved
  // into typed views, as the layer-streaming chunk buffers are). The range must fit.
  Tensor view(size_t byte_offset, const Shape& shape, DType dtype) const;
  // The same storage seen with another shape of equal numel. One dim may be -1.
  Tensor reshape(std::initializer_list<int64_t> dims) const;
  Tensor reshape(const Shape& shape) const;
  bool shares_storage_with(const Tensor& other) const { return storage_ == other.storage_; }
  // Whether the two tensors' byte ranges intersect (views of one storage that do not are
  // independent: packed tensors, row slices).
  bool overlaps(const Tensor& other) const;

  // A copy on `device` (same dtype). With a stream the copy is enqueued on it and the
  // caller synchronizes; without one it waits for all earlier work on the device first and
  // returns when the copy is done.
  Tensor to(Device device, Stream* stream = nullptr) const;
  // Copies src into this tensor: same dtype and numel, any devices.
  void copy_from(const Tensor& src, Stream* stream = nullptr);
  // A CPU copy converted to another dtype (through double; floats round to nearest even).
  Tensor to_dtype(DType dtype) const;
  // Sets every byte of the storage range to `byte` (poisoning, zeroing).
  void fill_bytes(int byte, Stream* stream = nullptr);

  // "Tensor(shape=(2, 3), dtype=F32, device=cpu)\n[[1, 2, 3], ...]" with at most
  // max_items values per dim shown (device tensors are copied to the host to print).
  std::string str(int max_items = 6) const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes into storage
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_;
};

namespace detail {
template <typename T> constexpr bool dtype_matches(DType) { return false; }
template <> constexpr bool dtype_matches<float>(DType t) { return t == DType::f32; }
template <> constexpr bool dtype_matches<const float>(DType t) { return t == DType::f32; }
template <> constexpr bool dtype_matches<double>(DType t) { return t == DType::f64; }
template <> constexpr bool dtype_matches<const double>(DType t) { return t == DType::f64; }
template <> constexpr bool dtype_matches<uint16_t>(DType t) { return t == DType::f16 || t == DType::bf16; }
template <> constexpr bool dtype_matches<const uint16_t>(DType t) { return t == DType::f16 || t == DType::bf16; }
template <> constexpr bool dtype_matches<int8_t>(DType t) { return t == DType::i8; }
template <> constexpr bool dtype_matches<uint8_t>(DType t) { return t == DType::u8 || t == DType::boolean; }
template <> constexpr bool dtype_matches<int32_t>(DType t) { return t == DType::i32; }
template <> constexpr bool dtype_matches<const int32_t>(DType t) { return t == DType::i32; }
template <> constexpr bool dtype_matches<int64_t>(DType t) { return t == DType::i64; }
template <> constexpr bool dtype_matches<const int64_t>(DType t) { return t == DType::i64; }
[[noreturn]] void throw_dtype_mismatch(DType have, const char* want);
}  // namespace detail

template <typename T>
T* Tensor::data_as() const {
  if (!detail::dtype_matches<T>(dtype_)) detail::throw_dtype_mismatch(dtype_, typeid(T).name());
  return static_cast<T*>(data());
}

std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace onn
