// CPU streams and events; strict JSON parsing; error messages from the check macros;
// the hardware profile on a machine without a GPU.
#include <doctest/doctest.h>

#include <string>
#include <thread>

#include "runtime/allocator.h"
#include "runtime/error.h"
#include "runtime/hardware.h"
#include "runtime/host_span.h"
#include "runtime/json.h"
#include "runtime/layer_stream.h"
#include "runtime/stream.h"

using namespace onn;

TEST_CASE("CPU events time host work") {
  Stream s(Device::cpu());
  Event a(Device::cpu()), b(Device::cpu());
  a.record(s);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  b.record(s);
  CHECK(Event::elapsed_ms(a, b) >= 15.0f);
  CHECK(b.ready());
  s.wait(a);
  s.synchronize();
  Event unrecorded(Device::cpu());
  CHECK_THROWS_AS(Event::elapsed_ms(unrecorded, b), InvalidArgument);
}

TEST_CASE("a streaming timeline's idle time is split into waiting for the host, for a copy, and the rest") {
  // Four chunk windows; the gaps before them: the first chunk's copy (10 ms), the second's
  // copy (5), the host enqueuing the third late (3) then 2 more, the fourth's copy (1) then 1
  // more; 4 ms after the last window (an activation copy).
  // Chunks alternate between buffers 0 and 1. Copy 1 could start at 10 (after copy 0) but
  // started at 12 (2 ms queued); copy 3 could start at 35 (its buffer's window ended) but the
  // host enqueued it at 35.5 and it started at 36 (0.5 ms each).
  const auto dev = [](const char* lane, int64_t index, double issued, double start, double end, int slot = -1) {
    return TraceSpan{lane, index, issued, start, end, slot, {}, 0};
  };
  const std::vector<TraceSpan> spans = {
      dev("copy", 0, 0, 0, 10, 0),      dev("compute", 0, 0, 10, 20, 0),  dev("copy", 1, 1, 12, 25, 1),
      dev("copy", 2, 2, 20, 30, 0),     dev("compute", 1, 5, 25, 35, 1),  dev("copy", 3, 35.5, 36, 51, 1),
      dev("compute", 2, 38, 40, 50, 0), dev("compute", 3, 45, 52, 60, 1), dev("act_out", 3, 50, 55, 64),
      // Host calls: the third window's late enqueue [35, 38] overlaps a cudaFree by 2 ms and a
      // stream wait by 0.5; the malloc is in no gap's host part; the last ends after the device
      // spans (it does not lengthen the step's span).
      {"host", -1, 0, 0, 1, -1, "device_malloc", 4096}, {"host", -1, 34, 34, 37, -1, "device_free", 4096},
      {"host", -1, 37.5, 37.5, 39, -1, "stream_sync", 0}, {"host", -1, 66, 66, 70, -1, "event_sync", 0}};
  const TraceSummary s = summarize_trace(spans);
  CHECK(s.span_ms == doctest::Approx(64));
  CHECK(s.compute_ms == doctest::Approx(38));
  CHECK(s.copy_ms == doctest::Approx(43));  // [0,10] + [12,30] + [36,51]
  CHECK(s.act_copy_ms == doctest::Approx(9));
  CHECK(s.overlap_ms == doctest::Approx(23));  // [12,20] + [25,30] + [40,50]
  CHECK(s.idle_ms == doctest::Approx(26));
  CHECK(s.idle_host_ms == doctest::Approx(3));
  CHECK(s.idle_copy_ms == doctest::Approx(16));
  CHECK(s.tail_ms == doctest::Approx(4));
  CHECK(s.idle_other_ms == doctest::Approx(7));
  CHECK(s.idle_host_ms + s.idle_copy_ms + s.idle_other_ms == doctest::Approx(s.idle_ms));
  CHECK(s.copy_host_late_ms == doctest::Approx(0.5));
  CHECK(s.copy_queued_ms == doctest::Approx(2.5));
  CHECK(s.idle_host_calls_ms.size() == 2);
  CHECK(s.idle_host_calls_ms.at("device_free") == doctest::Approx(2));
  CHECK(s.idle_host_calls_ms.at("stream_sync") == doctest::Approx(0.5));
  CHECK(s.host_calls_ms.at("device_malloc") == doctest::Approx(1));
  CHECK(s.host_calls_ms.at("device_free") == doctest::Approx(3));
  CHECK(s.host_calls_ms.at("event_sync") == doctest::Approx(4));
  CHECK(s.host_calls.at("stream_sync") == 1);
  const nlohmann::ordered_json j = trace_summary_json(s);
  CHECK(j["idle_copy_ms"].get<double>() == doctest::Approx(16));
  CHECK(j["idle_host_calls_ms"]["device_free"].get<double>() == doctest::Approx(2));
  const nlohmann::ordered_json tj = trace_json(spans);
  CHECK(tj.size() == spans.size());
  CHECK(tj[10]["call"] == "device_free");
  CHECK(tj[10]["bytes"] == 4096);
  CHECK(!tj[0].contains("call"));
  CHECK(summarize_trace({}).span_ms == 0);
}

TEST_CASE("a stream trace puts device spans and host times on one axis from its origin") {
  Stream s(Device::cpu());
  StreamTrace trace(Device::cpu());
  Event early_a(Device::cpu()), early_b(Device::cpu());
  early_a.record(s);
  early_b.record(s);
  trace.add("copy", 9, 0, std::move(early_a), std::move(early_b));  // before begin(): dropped
  trace.begin(s);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const double issued = trace.host_ms();
  Event a(Device::cpu()), b(Device::cpu());
  a.record(s);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  b.record(s);
  trace.add("compute", 3, issued, std::move(a), std::move(b));
  const std::vector<TraceSpan> spans = trace.take();
  REQUIRE(spans.size() == 1);
  CHECK(spans[0].lane == "compute");
  CHECK(spans[0].index == 3);
  CHECK(spans[0].issued_ms >= 4.0);
  CHECK(spans[0].start_ms >= spans[0].issued_ms);
  CHECK(spans[0].end_ms - spans[0].start_ms >= 8.0);
  CHECK(trace.take().empty());
}

TEST_CASE("a stream trace records the host calls made between begin and take") {
  Stream s(Device::cpu());
  StreamTrace trace(Device::cpu());
  { const HostSpan before("before", 1); }  // no trace yet: not recorded
  CachingAllocator device(make_host_raw_backend(), size_t{64} << 20);
  trace.begin(s);
  {
    const HostSpan span("test_call", 7);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  void* p = device.allocate(size_t{3} << 20);  // a backend allocation of one 4 MiB class
  device.deallocate(p, size_t{3} << 20);
  device.release_cache();  // and its free
  std::vector<TraceSpan> spans = trace.take();
  { const HostSpan after("after", 1); }  // take() ended the recording
  REQUIRE(spans.size() == 3);
  CHECK(spans[0].lane == "host");
  CHECK(spans[0].call == "test_call");
  CHECK(spans[0].bytes == 7);
  CHECK(spans[0].start_ms >= 0);
  CHECK(spans[0].end_ms - spans[0].start_ms >= 2.5);
  CHECK(spans[1].call == "device_malloc");
  CHECK(spans[1].bytes == (size_t{4} << 20));
  CHECK(spans[2].call == "device_free");
  CHECK(spans[2].start_ms >= spans[1].end_ms);
  const TraceSummary sum = summarize_trace(spans);
  CHECK(sum.host_calls.at("device_malloc") == 1);
  CHECK(sum.span_ms == 0);  // no device spans
  CHECK(trace.take().empty());

  // A trace destroyed while recording stops being the sink.
  {
    StreamTrace other(Device::cpu());
    other.begin(s);
  }
  const HostSpan safe("after a destroyed trace");
  CHECK(set_host_span_sink(nullptr) == nullptr);
}

TEST_CASE("find_invalid_utf8") {
  CHECK(find_invalid_utf8("plain ascii") == std::string::npos);
  CHECK(find_invalid_utf8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80") == std::string::npos);
  CHECK(find_invalid_utf8("ab\xff") == 2);
  CHECK(find_invalid_utf8("\xc0\xaf") == 0);          // overlong '/'
  CHECK(find_invalid_utf8("x\xed\xa0\x80") == 1);      // surrogate
  CHECK(find_invalid_utf8("\xf4\x90\x80\x80") == 0);  // above U+10FFFF
  CHECK(find_invalid_utf8("\xe2\x82") == 0);           // truncated
}

TEST_CASE("parse_json_strict refuses duplicates, depth and bad text, naming the source") {
  CHECK(parse_json_strict(R"({"a": {"b": [1, 2]}})", "x.json")["a"]["b"][1] == 2);
  CHECK_THROWS_WITH_AS(parse_json_strict(R"({"a": 1, "a": 2})", "x.json"),
                       doctest::Contains("x.json: duplicate key \"a\""), FormatError);
  // The same key in different objects is fine.
  CHECK_NOTHROW(parse_json_strict(R"({"a": {"k": 1}, "b": {"k": 2}})", "x.json"));
  CHECK_THROWS_WITH_AS(parse_json_strict("[[[[1]]]]", "x.json", 3), doctest::Contains("nested deeper than 3"),
                       FormatError);
  CHECK_NOTHROW(parse_json_strict("[[[1]]]", "x.json", 3));
  CHECK_THROWS_WITH_AS(parse_json_strict("{\"a\": tru}", "x.json"), doctest::Contains("x.json: invalid JSON at byte"),
                       FormatError);
  CHECK_THROWS_WITH_AS(parse_json_strict("\"\xff\"", "x.json"), doctest::Contains("not valid UTF-8 (byte 1)"),
                       FormatError);
}

TEST_CASE("ONN_ASSERT records statement, file, line and device") {
  try {
    const int two = 2;
    ONN_ASSERT(two == 3, "two is ", two);
    FAIL("no throw");
  } catch (const InternalError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("`two == 3`") != std::string::npos);
    CHECK(msg.find("stream_json_test.cpp:") != std::string::npos);
    CHECK(msg.find("(device cpu)") != std::string::npos);
    CHECK(msg.find("two is 2") != std::string::npos);
    CHECK_FALSE(e.is_user_error());
  }
  CHECK(InvalidArgument("x").is_user_error());
  CHECK(FormatError("x").is_user_error());
}

TEST_CASE("hardware profile reports the CPU, and says when there is no GPU") {
  ProfileOptions o;
  o.measure = false;
  const HardwareProfile p = profile_hardware(o);
  CHECK(p.cpu_threads >= 1);
  CHECK(p.ram_total > 0);
  CHECK(p.ram_available <= p.ram_total);
  const auto j = to_json(p);
  CHECK(j["cpu"]["threads"] == p.cpu_threads);
  CHECK(j["cuda"]["device_count"] == p.devices.size());
  if (p.devices.empty()) {
    const std::string text = to_text(p);
    CHECK((text.find("no CUDA device found") != std::string::npos ||
           text.find("not compiled in") != std::string::npos));
  }
  o.measure = true;
  o.reps = 2;
  CHECK(profile_hardware(o).host_memcpy_gbs > 0.1);
}
