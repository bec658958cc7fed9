#include "runtime/comm.h"

#include <cstdlib>
#include <cstring>

#include "runtime/json.h"

namespace onn {

const char* comm_backend_name(CommBackend b) {
  switch (b) {
    case CommBackend::local: return "local";
    case CommBackend::mpi: return "mpi";
    case CommBackend::nccl: return "nccl";
  }
  return "?";
}

namespace {

class LocalCommunicator final : public Communicator {
 public:
  CommBackend backend() const override { return CommBackend::local; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  void all_reduce_sum(Context&, const std::vector<Tensor>&) override {}
  std::vector<std::string> all_gather(const std::string& mine) override { return {mine}; }
  void broadcast(std::string&, int root) override { ONN_ASSERT(root == 0, "broadcast from rank ", root, " of 1"); }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};

using Fields = std::vector<std::pair<std::string, std::string>>;

Fields parse_fields(const std::string& bytes) {
  Fields f;
  for (const auto& kv : nlohmann::json::parse(bytes)) f.emplace_back(kv.at(0).get<std::string>(), kv.at(1).get<std::string>());
  return f;
}

// The first difference of `other` (rank r) from rank 0's fields, or "".
std::string first_difference(const Fields& lead, const Fields& other, int r, const std::string& what) {
  const std::string tail = "; every rank must be started with the same flags and files";
  for (size_t i = 0; i < lead.size() && i < other.size(); ++i) {
    if (lead[i].first != other[i].first)
      return "rank " + std::to_string(r) + "'s " + what + " lists " + other[i].first + " where rank 0's lists " +
             lead[i].first + " (another ONN build?)" + tail;
    if (lead[i].second != other[i].second)
      return "rank " + std::to_string(r) + "'s " + what + " differs from rank 0's: " + lead[i].first + " is " +
             other[i].second + " on rank " + std::to_string(r) + " and " + lead[i].second + " on rank 0" + tail;
  }
  if (lead.size() != other.size())
    return "rank " + std::to_string(r) + "'s " + what + " has " + std::to_string(other.size()) + " fields, rank 0's " +
           std::to_string(lead.size()) + " (another ONN build?)" + tail;
  return "";
}

}  // namespace

std::unique_ptr<Communicator> local_communicator() { return std::make_unique<LocalCommunicator>(); }

double sum_in_rank_order(Communicator& comm, const std::vector<double>& mine) {
  double sum = 0;
  for (const std::string& bytes :
       comm.all_gather(std::string(reinterpret_cast<const char*>(mine.data()), mine.size() * sizeof(double)))) {
    ONN_ASSERT(bytes.size() % sizeof(double) == 0, "a rank sent ", bytes.size(), " bytes of doubles");
    for (size_t i = 0; i < bytes.size(); i += sizeof(double)) {
      double v;
      std::memcpy(&v, bytes.data() + i, sizeof v);
      sum += v;
    }
  }
  return sum;
}

void check_same_on_all_ranks(Communicator& comm, const Fields& fields, const std::string& what) {
  if (comm.size() == 1) return;
  nlohmann::json mine = nlohmann::json::array();
  for (const auto& [k, v] : fields) mine.push_back({k, v});
  const std::vector<std::string> all = comm.all_gather(mine.dump());
  const Fields lead = parse_fields(all[0]);
  for (size_t r = 1; r < all.size(); ++r) {
    const std::string diff = first_difference(lead, parse_fields(all[r]), static_cast<int>(r), what);
    if (!diff.empty()) throw RanksDisagree(diff);
  }
}

}  // namespace onn
