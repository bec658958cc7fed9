// onn-init + onn-generate as a user runs them, on the CPU: a tiny random model folder with a
// tokenizer learned from text; greedy output is the same every run, sampled output is the same
// for a seed; --json gives one token event per token and a done event; errors exit 2.
#include <doctest/doctest.h>

#include <sstream>
#include <string>

#include "runtime/json.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

namespace {
const std::string kInit = ONN_INIT_PATH;
const std::string kGen = ONN_GENERATE_PATH;

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}
}  // namespace

TEST_CASE("onn-generate streams text from an onn-init model, deterministic greedy and under a seed") {
  TempDir dir;
  const std::string model = dir.file("tiny");
  const ProcessResult init = run_process({kInit, "--preset", "tiny", "--out", model, "--tokenizer-text",
                                          std::string(ONN_TEST_DATA_DIR) + "/eval.txt", "--tokenizer-vocab", "300",
                                          "--seed", "1"});
  REQUIRE(init.exit_code == 0);
  const std::vector<std::string> base = {kGen, "--model", model, "--prompt", "The quick brown", "--device", "cpu",
                                         "--max-new-tokens", "12"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return run_process(a);
  };
  const ProcessResult g1 = with({"--temperature", "0"}), g2 = with({"--temperature", "0"});
  CHECK(g1.exit_code == 0);
  CHECK(!g1.out.empty());
  CHECK(g1.out == g2.out);
  const ProcessResult s1 = with({"--seed", "7"}), s2 = with({"--seed", "7"});
  CHECK(s1.exit_code == 0);
  CHECK(s1.out == s2.out);
  const ProcessResult j = with({"--seed", "7", "--json"});
  REQUIRE(j.exit_code == 0);
  const std::vector<std::string> lines = lines_of(j.out);
  REQUIRE(lines.size() >= 2);
  std::string text;
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    const nlohmann::json e = parse_json_strict(lines[i], "event");
    CHECK(e["type"] == "token");
    text += e["text"].get<std::string>();
  }
  const nlohmann::json done = parse_json_strict(lines.back(), "done");
  CHECK(done["type"] == "done");
  CHECK(done["tokens"].get<size_t>() == lines.size() - 1);
  CHECK(done["tok_per_s"].get<double>() > 0);
  CHECK(text + "\n" == s1.out);  // the same text as the plain stream, which ends with a newline
  // --chat: the prompt becomes a user turn of the chosen format (the tiny tokenizer has no
  // chat_template of its own, so the format must be named).
  const ProcessResult c = with({"--chat", "--chat-format", "chatml", "--system", "Be brief.", "--json"});
  REQUIRE(c.exit_code == 0);
  const nlohmann::json cdone = parse_json_strict(lines_of(c.out).back(), "done");
  CHECK(cdone["prompt_tokens"].get<int64_t>() > 30);  // the chatml markup is in the prompt
  const ProcessResult nc = with({"--chat"});
  CHECK(nc.exit_code == 2);
  CHECK(nc.err.find("no chat_template; pick one with --chat-format (llama3, chatml") != std::string::npos);

  // Interactive chat on a terminal: one "> " prompt per turn on stderr, one answer per line
  // on stdout, history kept between turns; ends at end-of-file.
  const std::vector<std::string> chat = {kGen, "--model", model, "--device", "cpu", "--max-new-tokens", "8",
                                         "--temperature", "0", "--chat", "--chat-format", "chatml"};
  const ProcessResult t = run_in_terminal(chat, "The quick brown\n\nover the lazy\n");
  REQUIRE(t.exit_code == 0);
  CHECK(t.err == "> > > > ");  // the empty line is asked again; the last prompt meets end-of-file
  const std::vector<std::string> answers = lines_of(t.out);
  REQUIRE(answers.size() == 2);
  // The first turn is exactly a one-shot --chat --prompt; the second sees the history, so it
  // differs from the same prompt asked alone.
  std::vector<std::string> one_shot = chat;
  one_shot.insert(one_shot.end(), {"--prompt", "The quick brown"});
  CHECK(run_process(one_shot).out == answers[0] + "\n");
  one_shot.back() = "over the lazy";
  const ProcessResult alone = run_process(one_shot);
  CHECK(alone.exit_code == 0);
  CHECK(alone.out != answers[1] + "\n");
  // Not a terminal: a clear refusal.
  const ProcessResult piped = run_process(chat);
  CHECK(piped.exit_code == 2);
  CHECK(piped.err.find("needs a terminal on stdin") != std::string::npos);
}

TEST_CASE("onn-init and onn-generate: bad usage gives one line on stderr and exit 2") {
  TempDir dir;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{kInit, "--preset", "huge", "--out", dir.file("x")}, "unknown preset \"huge\"; presets: tiny, small"},
      {{kInit, "--out", dir.file("x")}, "--preset and --out are required"},
      {{kGen, "--model", dir.file("none"), "--prompt", "hi", "--device", "cpu"}, "no such file"},
      {{kGen, "--prompt", "hi"}, "--model is required"},
      {{kGen, "--model", dir.file("none"), "--prompt", "a", "--prompt-file", "b"}, "at most 1 options be given from [--prompt,--prompt-file]"},
      {{kGen, "--model", dir.file("none"), "--prompt", "a", "--top-p", "2"}, "--top-p"},
      {{kGen, "--model", dir.file("none")}, "give --prompt or --prompt-file"},
      {{kGen, "--model", dir.file("none"), "--prompt", "a", "--system", "s"}, "--system and --chat-format need --chat"},
  };
  for (const auto& [argv, message] : cases) {
    CAPTURE(message);
    const ProcessResult r = run_process(argv);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(message) != std::string::npos);
    CHECK(r.err.find('\n') == r.err.size() - 1);
  }
}

TEST_CASE("onn-generate --stream on gives the resident output, and --plan says resident or streamed and why") {
  TempDir dir;
  const std::string model = dir.file("tiny");
  REQUIRE(run_process({kInit, "--preset", "tiny", "--out", model, "--seed", "3"}).exit_code == 0);
  const std::vector<std::string> base = {kGen, "--model", model, "--prompt", "abc def", "--device", "cpu",
                                         "--max-new-tokens", "10", "--temperature", "0"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return run_process(a);
  };
  const ProcessResult resident = with({}), streamed = with({"--stream", "on"}), two = with({"--stream", "on",
                                                                                            "--layers-per-chunk", "2"});
  REQUIRE(resident.exit_code == 0);
  CHECK(streamed.exit_code == 0);
  CHECK(streamed.out == resident.out);
  CHECK(two.out == resident.out);
  const ProcessResult plan = run_process({kGen, "--model", model, "--plan", "--device", "cpu"});
  CHECK(plan.exit_code == 0);
  CHECK(plan.out.find("resident: every weight on the device") != std::string::npos);
  // A Phi-4-shaped config under 4 GiB plans streamed generation (PCIe-bound decoding).
  const std::string phi = dir.file("phi4");
  REQUIRE(run_process({kInit, "--preset", "phi4", "--preset-vocab", "--config-only", "--out", phi}).exit_code == 0);
  // (--device cuda without a GPU: assumed GPU figures; --host-ram: a machine with room for the weights.)
  const ProcessResult big = run_process({kGen, "--model", phi, "--plan", "--device", "cuda", "--vram-budget", "4GiB",
                                         "--host-ram", "64GiB"});
  CHECK(big.exit_code == 0);
  CHECK(big.out.find("streamed:") != std::string::npos);
  CHECK(big.out.find("ms per token predicted (PCIe)") != std::string::npos);
  const ProcessResult tiny_budget = run_process({kGen, "--model", phi, "--plan", "--device", "cuda", "--vram-budget",
                                                 "1GiB", "--host-ram", "64GiB"});
  CHECK(tiny_budget.exit_code == 2);
  CHECK(tiny_budget.err.find("would fit with a budget of") != std::string::npos);
}
