// TensorBoard scalars without TensorFlow: an events.out.tfevents.* file of TFRecord-framed
// `Event` protocol buffers (wall_time, step, file_version, summary { value { tag, simple_value } }),
// which `tensorboard --logdir RUN_DIR` reads. The few protobuf fields are encoded by hand
// (docs/design.md says why); records are flushed as they are written, so a live run shows.
#pragma once

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>

namespace onn {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), continuing from `crc`.
uint32_t crc32c(std::span<const uint8_t> bytes, uint32_t crc = 0);
// TFRecord's masked form of a CRC-32C: ((c >> 15) | (c << 17)) + 0xa282ead8.
uint32_t masked_crc32c(std::span<const uint8_t> bytes);

class TensorBoardWriter {
 public:
  // Creates `dir` and a new events.out.tfevents.<seconds>.<host>.<pid> file in it, starting
  // with the file_version event ("brain.Event:2": TensorBoard then drops points a resumed run
  // writes again). IoError naming the file when it cannot be created.
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  const std::string& path() const { return path_; }
  // One scalar point (written and flushed). Non-finite values are written as they are.
  void scalar(const std::string& tag, int64_t step, double value);

 private:
  void record(const std::string& event);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace onn
