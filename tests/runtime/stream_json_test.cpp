// CPU streams and events; strict JSON parsing; error messages from the check macros;
// the hardware profile on a machine without a GPU.
#include <doctest/doctest.h>

#include <string>
#include <thread>

#include "runtime/error.h"
#include "runtime/hardware.h"
#include "runtime/json.h"
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
