// Tensor: shapes, views sharing storage, copies, dtype conversion, printing, and errors.
#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "runtime/error.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

using namespace onn;

TEST_CASE("shape basics and limits") {
  const Shape s{2, 3, 4};
  CHECK(s.rank() == 3);
  CHECK(s.numel() == 24);
  CHECK(s.str() == "(2, 3, 4)");
  CHECK(Shape{5}.str() == "(5,)");
  CHECK(Shape{}.numel() == 1);
  CHECK(Shape{3, 0}.numel() == 0);
  CHECK_THROWS_AS(Shape({1, 2, 3, 4, 5, 6}), InvalidArgument);
  CHECK_THROWS_AS(Shape({2, -1}), InvalidArgument);
  CHECK_THROWS_AS(Shape({INT64_MAX, 4}).numel(), InvalidArgument);
}

TEST_CASE("empty tensor metadata and 64-byte alignment") {
  const Tensor t = Tensor::empty(Shape{3, 5}, DType::bf16);
  CHECK(t.defined());
  CHECK(t.numel() == 15);
  CHECK(t.nbytes() == 30);
  CHECK(t.dim(-1) == 5);
  CHECK(t.device() == Device::cpu());
  CHECK(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
  CHECK_THROWS_AS(t.dim(2), InvalidArgument);
  CHECK_FALSE(Tensor().defined());
}

TEST_CASE("slice and reshape are views over the same storage") {
  Tensor t = Tensor::from_floats(Shape{3, 2}, {0, 1, 2, 3, 4, 5});
  Tensor rows = t.slice(1, 3);
  CHECK(rows.shape() == Shape{2, 2});
  CHECK(rows.data_as<float>()[0] == 2.0f);
  rows.data_as<float>()[1] = 42.0f;
  CHECK(t.data_as<float>()[3] == 42.0f);
  CHECK(rows.shares_storage_with(t));

  Tensor flat = t.reshape({-1});
  CHECK(flat.shape() == Shape{6});
  flat.data_as<float>()[0] = -1.0f;
  CHECK(t.data_as<float>()[0] == -1.0f);
  CHECK(t.reshape({2, -1}).shape() == Shape{2, 3});
  CHECK(t.slice(3, 3).numel() == 0);

  CHECK_THROWS_AS(t.reshape({4, 2}), InvalidArgument);
  CHECK_THROWS_AS(t.reshape({-1, -1}), InvalidArgument);
  CHECK_THROWS_AS(t.slice(2, 4), InvalidArgument);
  CHECK_THROWS_AS(t.slice(2, 1), InvalidArgument);
}

TEST_CASE("empty_packed carves aligned, disjoint tensors from one allocation") {
  CachingAllocator alloc(make_host_raw_backend(), 0);
  // A (16, 5120) F32 and a (35840, 16) F32 (Phi-4's fused gate_up LoRA pair) and an odd bf16.
  const std::vector<std::pair<Shape, DType>> specs = {
      {Shape{16, 5120}, DType::f32}, {Shape{35840, 16}, DType::f32}, {Shape{3, 7}, DType::bf16}};
  const size_t bytes = Tensor::packed_bytes(specs);
  CHECK(bytes == 327680 + 2293760 + 256);  // 42 bytes rounded up to 256
  const std::vector<Tensor> t = Tensor::empty_packed(specs, alloc);
  REQUIRE(t.size() == 3);
  for (size_t i = 0; i < t.size(); ++i) {
    CHECK(t[i].shape() == specs[i].first);
    CHECK(t[i].dtype() == specs[i].second);
    CHECK(reinterpret_cast<uintptr_t>(t[i].data()) % 256 == 0);
    for (size_t j = 0; j < t.size(); ++j) {
      CHECK(t[i].shares_storage_with(t[j]));
      CHECK(t[i].overlaps(t[j]) == (i == j));
    }
  }
  CHECK(static_cast<const char*>(t[2].data()) - static_cast<const char*>(t[0].data()) == 327680 + 2293760);
  // One block of the allocator: 2.5 MiB held as 4 MiB once, not 0.3 MiB + 4 MiB + 512 bytes.
  CHECK(alloc.stats().in_use == CachingAllocator::round_size(bytes));
  // Writing one leaves the others alone.
  std::memset(t[1].data(), 0x7f, t[1].nbytes());
  std::memset(t[0].data(), 0, t[0].nbytes());
  CHECK(static_cast<const unsigned char*>(t[1].data())[0] == 0x7f);
  CHECK(static_cast<const unsigned char*>(t[1].data())[t[1].nbytes() - 1] == 0x7f);
  CHECK(Tensor::empty_packed({}, alloc).empty());
}

TEST_CASE("overlaps compares byte ranges, not just storage") {
  const Tensor t = Tensor::zeros(Shape{4, 2}, DType::f32);
  CHECK(t.overlaps(t));
  CHECK(t.slice(0, 2).overlaps(t));
  CHECK_FALSE(t.slice(0, 2).overlaps(t.slice(2, 4)));
  CHECK(t.slice(1, 3).overlaps(t.slice(2, 4)));
  CHECK_FALSE(t.slice(1, 1).overlaps(t));  // empty
  CHECK_FALSE(t.overlaps(Tensor::zeros(Shape{4, 2}, DType::f32)));
  CHECK_FALSE(t.overlaps(Tensor()));
}

TEST_CASE("typed access checks the dtype") {
  Tensor t = Tensor::empty(Shape{2}, DType::i32);
  CHECK_NOTHROW(t.data_as<int32_t>());
  CHECK_THROWS_AS(t.data_as<float>(), InvalidArgument);
}

TEST_CASE("copy_from, to and to_dtype") {
  const Tensor a = Tensor::from_floats(Shape{2, 2}, {1.5f, -2.25f, 3.0f, 1e-3f});
  const Tensor b = a.to(Device::cpu());
  CHECK_FALSE(b.shares_storage_with(a));
  CHECK(std::memcmp(a.data(), b.data(), a.nbytes()) == 0);

  const Tensor h = a.to_dtype(DType::bf16);
  CHECK(h.dtype() == DType::bf16);
  const Tensor back = h.to_dtype(DType::f32);
  CHECK(back.data_as<float>()[0] == 1.5f);
  CHECK(back.data_as<float>()[1] == -2.25f);
  const Tensor i = a.to_dtype(DType::i32);
  CHECK(i.data_as<int32_t>()[1] == -2);

  Tensor wrong = Tensor::empty(Shape{3}, DType::f32);
  CHECK_THROWS_AS(wrong.copy_from(a), InvalidArgument);
  Tensor same = Tensor::empty(Shape{4}, DType::f32);
  Stream s(Device::cpu());
  same.copy_from(a, &s);
  CHECK(same.data_as<float>()[2] == 3.0f);
}

TEST_CASE("fill_bytes and zeros") {
  Tensor z = Tensor::zeros(Shape{4}, DType::i64);
  for (int i = 0; i < 4; ++i) CHECK(z.data_as<int64_t>()[i] == 0);
  z.fill_bytes(0xff);
  CHECK(z.data_as<int64_t>()[3] == -1);
}

TEST_CASE("printing is readable and elides long dims") {
  const Tensor t = Tensor::from_floats(Shape{2, 3}, {1, 2, 3, 4, 5, 6.5f});
  CHECK(t.str() == "Tensor(shape=(2, 3), dtype=F32, device=cpu)\n[[1, 2, 3], [4, 5, 6.5]]");
  Tensor big = Tensor::empty(Shape{10}, DType::i32);
  for (int i = 0; i < 10; ++i) big.data_as<int32_t>()[i] = i;
  CHECK(big.str(4) == "Tensor(shape=(10,), dtype=I32, device=cpu)\n[0, 1, ..., 8, 9]");
  CHECK(Tensor::empty(Shape{0, 2}, DType::f32).str().ends_with("[]"));
  CHECK(Tensor().str() == "Tensor(undefined)");
}

TEST_CASE("wrap keeps its owner alive") {
  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{7, 8, 9});
  Tensor t = Tensor::wrap(owner->data(), Shape{3}, DType::f32, owner);
  std::weak_ptr<std::vector<float>> weak = owner;
  owner.reset();
  CHECK_FALSE(weak.expired());
  CHECK(t.data_as<float>()[2] == 9.0f);
  t = Tensor();
  CHECK(weak.expired());
}

TEST_CASE("device names") {
  CHECK(Device::parse("cpu") == Device::cpu());
  CHECK(Device::parse("cuda:3") == Device::cuda(3));
  CHECK(Device::parse("cuda") == Device::cuda(0));
  CHECK(Device::cuda(1).str() == "cuda:1");
  CHECK_THROWS_AS(Device::parse("cuda:-1"), InvalidArgument);
  CHECK_THROWS_AS(Device::parse("gpu"), InvalidArgument);
  CHECK_THROWS_AS(Device::parse("cuda:1x"), InvalidArgument);
}
