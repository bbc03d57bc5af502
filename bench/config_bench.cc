// Benchmark of the configuration loader and the rule engine at the scale of
// a large installation: 100,000 rules in 20 files.
//
// Measures (a) Load() plus RuleSet construction, the median of 5 runs, and
// (b) RuleSet::Decide() for names that hit exact rules, names that hit
// suffix rules and names that match nothing. Single calls are too short for
// the clock, so calls are timed in batches and each batch gives one ns/call
// sample; the table shows the median and the 99th percentile of the batches.
//
//   config_bench [--write FILE] [--command TEXT]
//
// prints a Markdown table; --write also replaces the part of FILE between
// the config-bench markers with it (creating FILE when missing), and
// --command names the command shown in the table (by default this one's).
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/rules.h"

namespace tunnels::bench {
namespace {

namespace fs = std::filesystem;
using config::Decision;
using config::LoadOptions;
using config::LoadResult;
using config::RuleSet;
using Clock = std::chrono::steady_clock;

constexpr int kRules = 100'000;
constexpr int kFiles = 20;
constexpr int kLoadRuns = 5;
constexpr int kBatch = 1000;    // calls per timed batch
constexpr int kBatches = 1000;  // 10^6 calls per kind of name
constexpr double kLoadGoalMs = 1000;
constexpr double kDecideGoalNs = 1000;

#ifdef __clang__
constexpr const char* kCompiler = "clang " __clang_version__;
#else
constexpr const char* kCompiler = "g++ " __VERSION__;
#endif

constexpr const char* kBeginMarker = "<!-- config-bench:begin -->";
constexpr const char* kEndMarker = "<!-- config-bench:end -->";

// Keeps the compiler from proving a result unused and dropping the call
// that made it.
template <typename T>
void KeepAlive(const T& value) {
  asm volatile("" : : "r,m"(value) : "memory");
}

// A temporary directory, removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tunnels-bench-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The names the generated configuration is known to decide, by kind.
struct Workload {
  std::vector<std::string> exact_hits;   // names of exact rules
  std::vector<std::string> suffix_hits;  // names strictly under ".x" / "*.x" rules
  std::vector<std::string> misses;       // names no rule matches
};

// Writes kRules rules over kFiles files, shaped like real lists: mostly
// exact host names and ".domain" subtrees, some "*.domain", a few @ports,
// failover lists and block rules, and a handful of wildcard-in-the-middle
// patterns (which the engine matches one by one) as users do write them.
Workload WriteConfig(const fs::path& dir) {
  std::mt19937 rng(20261124);
  auto below = [&](std::uint32_t n) {
    return std::uniform_int_distribution<std::uint32_t>(0, n - 1)(rng);
  };
  static constexpr const char* kTlds[] = {"com", "net", "org", "io", "de", "co.uk", "example"};
  static constexpr const char* kWords[] = {"cdn",   "api", "static", "mail",  "shop",  "news",
                                           "media", "img", "ads",    "track", "login", "app"};
  static constexpr const char* kPorts[] = {"@web",        "@https",   "@ssh",
                                           "@t8000-8100", "@web+ssh", "@t8443+u443"};
  static constexpr const char* kActions[] = {"tor",   "office",      "vps",           "direct",
                                             "block", "tor, office", "office, direct"};
  Workload w;
  std::ofstream head(dir / "00-proxies.yml");
  head << "upstreamDns: 192.0.2.53\n"
          "proxies:\n"
          "  tor: {type: socks5, address: $RANDOM:$RANDOM@127.0.0.1:9050}\n"
          "  office: {type: http, address: proxy.example.com:3128}\n"
          "  vps: {type: socks5, address: 10.0.0.2:1080}\n"
          "rules:\n"
          "  .google.*@web: tor\n"
          "  www.*.example.net: office\n"
          "  *.cdn.*.example.org: direct\n"
          "  ads.*.*.example.com: block\n"
          "  mail.*.co.uk@t25+t587: vps\n";
  const int per_file = kRules / kFiles;
  int written = 5;
  for (int f = 0; f < kFiles; ++f) {
    char name[32];
    std::snprintf(name, sizeof name, "%02d-rules.yml", f + 1);
    std::ofstream out(dir / name);
    out << "rules:\n";
    const int count = f == kFiles - 1 ? kRules - written : per_file;
    for (int i = 0; i < count; ++i, ++written) {
      // Unique per rule, so that no two rules share a pattern.
      const std::string domain = std::string(kWords[below(12)]) + std::to_string(written) + "-" +
                                 std::to_string(below(1000)) + "." + kTlds[below(7)];
      const std::uint32_t kind = below(100);
      std::string pattern;
      if (kind < 50) {  // an exact host name
        pattern = std::string(kWords[below(12)]) + "." + domain;
        if (w.exact_hits.size() < 100'000) w.exact_hits.push_back(pattern);
      } else if (kind < 85) {  // a subtree
        pattern = "." + domain;
        w.suffix_hits.push_back("www." + std::string(kWords[below(12)]) + "." + domain);
      } else {  // strictly under; unquoted, as the original's README writes it
        pattern = "*." + domain;
        w.suffix_hits.push_back(std::string(kWords[below(12)]) + "." + domain);
      }
      out << "  " << pattern;
      if (below(10) == 0) out << kPorts[below(6)];
      out << ": " << kActions[below(7)] << "\n";
    }
  }
  for (int i = 0; i < 100'000; ++i) {
    w.misses.push_back(std::string(kWords[below(12)]) + "." + kWords[below(12)] +
                       std::to_string(below(1'000'000)) + ".unlisted-" + kTlds[below(7)]);
  }
  return w;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(p / 100 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(rank, v.size() - 1)];
}

struct Latency {
  double median_ns = 0;
  double p99_ns = 0;
  std::size_t matched = 0;  // calls that found a rule, to check the workload
};

// Decides kBatch * kBatches names drawn from `names`, timing batches.
Latency TimeDecide(const RuleSet& rules, const std::vector<std::string>& names) {
  // The order of the names is shuffled once, so that consecutive calls do
  // not walk memory in the order the tables were built.
  std::vector<std::size_t> order(names.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  std::vector<double> samples;
  samples.reserve(kBatches);
  Latency out;
  std::size_t next = 0;
  // A warm-up pass over every name: the first touch of a table entry is a
  // cache miss that a running server pays once, not per query.
  for (const std::string& n : names) KeepAlive(rules.Decide(n, 443, config::Protocol::kTcp));
  for (int b = 0; b < kBatches; ++b) {
    std::size_t matched = 0;
    const auto start = Clock::now();
    for (int i = 0; i < kBatch; ++i) {
      const Decision d = rules.Decide(names[order[next]], 443, config::Protocol::kTcp);
      KeepAlive(d);
      matched += d.dns != config::DnsAction::kForward;
      if (++next == order.size()) next = 0;
    }
    const auto took = Clock::now() - start;
    out.matched += matched;
    samples.push_back(std::chrono::duration<double, std::nano>(took).count() / kBatch);
  }
  out.median_ns = Median(samples);
  out.p99_ns = Percentile(samples, 99);
  return out;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("model name")) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown";
}

// The 1-minute load average, shown with the numbers: on a shared machine
// other work inflates them.
std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string first;
  in >> first;
  return first.empty() ? "unknown" : first;
}

double ProcessCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

std::string Today() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string Fixed(double v, int decimals) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(decimals);
  s << v;
  return s.str();
}

std::string Verdict(bool met) { return met ? "met" : "**missed**"; }

void ReplaceSection(const std::string& file, const std::string& section) {
  std::string text;
  {
    std::ifstream in(file);
    std::ostringstream s;
    s << in.rdbuf();
    text = s.str();
  }
  const std::string block = std::string(kBeginMarker) + "\n" + section + kEndMarker;
  if (text.empty()) {
    text =
        "# Benchmarks\n\n"
        "Measured numbers for the parts of tunnels that have performance goals. Each\n"
        "section below is written by a program in `bench/`, which replaces only its own\n"
        "section (between its `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers);\n"
        "rerun the command given in a section to refresh it.\n\n" +
        block + "\n";
  } else {
    const auto begin = text.find(kBeginMarker);
    const auto end = text.find(kEndMarker);
    if (begin != std::string::npos && end != std::string::npos && begin < end) {
      text.replace(begin, end + std::string(kEndMarker).size() - begin, block);
    } else {
      text += (text.ends_with("\n") ? "\n" : "\n\n") + block + "\n";
    }
  }
  // Written aside and renamed over the file, so that a reader (or another
  // benchmark updating its own section) never sees half of it.
  std::string temp = (fs::path(file).parent_path() / ".BENCHMARKS.XXXXXX").string();
  const int fd = mkstemp(temp.data());
  if (fd < 0) throw std::runtime_error("cannot create a file next to " + file);
  close(fd);
  fs::permissions(temp, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                            fs::perms::others_read);
  std::ofstream(temp) << text;
  fs::rename(temp, file);
}

int Main(int argc, char** argv) {
  std::string write_file;
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--write" && i + 1 < argc) {
      write_file = argv[++i];
    } else if (arg == "--command" && i + 1 < argc) {
      command = argv[++i];
    } else {
      std::cerr << "usage: config_bench [--write FILE] [--command TEXT]\n";
      return 2;
    }
  }

  const std::string load_average = LoadAverage();
  TempDir dir;
  const Workload work = WriteConfig(dir.path());
  LoadOptions options;
  options.system_resolv_conf = (dir.path() / "no-resolv.conf").string();  // upstreamDns is set

  // (a) Load and compile.
  std::vector<double> load_ms;
  std::vector<double> load_cpu_ms;  // of this process: what other work cannot inflate
  std::optional<RuleSet> rules;
  std::size_t rule_count = 0;
  for (int run = 0; run < kLoadRuns; ++run) {
    rules.reset();
    const double cpu_start = ProcessCpuMs();
    const auto start = Clock::now();
    const LoadResult r = config::Load({dir.path().string()}, options);
    if (!r.ok()) {
      for (const auto& d : r.diagnostics) std::cerr << d.ToString() << "\n";
      std::cerr << "config_bench: the generated configuration does not load\n";
      return 1;
    }
    rules.emplace(*r.config);
    load_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    load_cpu_ms.push_back(ProcessCpuMs() - cpu_start);
    rule_count = rules->size();
  }
  if (rule_count != kRules) {
    std::cerr << "config_bench: expected " << kRules << " rules, loaded " << rule_count << "\n";
    return 1;
  }

  // (b) Decide.
  const Latency exact = TimeDecide(*rules, work.exact_hits);
  const Latency suffix = TimeDecide(*rules, work.suffix_hits);
  const Latency miss = TimeDecide(*rules, work.misses);
  const std::size_t calls = static_cast<std::size_t>(kBatch) * kBatches;
  if (exact.matched != calls || suffix.matched != calls || miss.matched != 0) {
    std::cerr << "config_bench: the names do not match as intended (exact " << exact.matched
              << ", suffix " << suffix.matched << ", misses " << miss.matched << " of " << calls
              << ")\n";
    return 1;
  }

  const double load = Median(load_ms);
  std::ostringstream t;
  t << "## Configuration loading and rule decisions\n\n"
    << "100,000 rules (50% exact names, 35% `.domain`, 15% `*.domain`; 10% with `@ports`; 5 "
       "wildcard-in-the-middle patterns; 3 proxies, failover lists and block rules) in "
    << kFiles << " files, generated by `bench/config_bench.cc`.\n\n"
    << "| Measurement | Goal | Median | p99 | Goal met |\n"
    << "|---|---|---|---|---|\n"
    << "| `Load` + `RuleSet` construction (" << kLoadRuns << " runs; min "
    << Fixed(*std::min_element(load_ms.begin(), load_ms.end()), 0) << " ms, max "
    << Fixed(*std::max_element(load_ms.begin(), load_ms.end()), 0) << " ms; CPU time "
    << Fixed(Median(load_cpu_ms), 0) << " ms) | < 1 s | " << Fixed(load, 0) << " ms | | "
    << Verdict(load < kLoadGoalMs) << " |\n";
  auto row = [&](const char* what, const Latency& l) {
    t << "| `Decide`, " << what << " | < 1 µs median | " << Fixed(l.median_ns, 0) << " ns | "
      << Fixed(l.p99_ns, 0) << " ns | " << Verdict(l.median_ns < kDecideGoalNs) << " |\n";
  };
  row("hit on an exact rule", exact);
  row("hit on a suffix rule", suffix);
  row("miss (no rule matches)", miss);
  t << "\nThe load is timed on the wall clock, as the goal is; its CPU time (median) shows "
       "how much of it was this process's own work on a busy machine. `Decide` figures are "
       "per call: "
    << kBatches << " batches of " << kBatch
    << " calls on 100,000 distinct names, each batch timed with `steady_clock`; median and p99 "
       "are over the batches.\n\n"
    << "- Machine: nproc " << sysconf(_SC_NPROCESSORS_ONLN) << ", " << CpuModel()
    << "; 1-minute load average " << load_average << " when the run started\n"
    << "- Build: " << TUNNELS_BENCH_BUILD << ", " << kCompiler << "\n"
    << "- Date: " << Today() << "\n"
    << "- Command: `" << command << "`\n";
  const std::string table = t.str();
  std::cout << table;
  if (!write_file.empty()) ReplaceSection(write_file, table);
  return 0;
}

}  // namespace
}  // namespace tunnels::bench

int main(int argc, char** argv) { return tunnels::bench::Main(argc, argv); }
