// One kernel parameter under /proc/sys, set for as long as an object lives.
//
//   auto forward = Sysctl::Set("net.ipv4.ip_forward", "1", &error);
//
// writes 1 unless the parameter already is 1, and the destructor writes the
// old value back, but only if this object changed it and nobody changed it
// since (then the newer value is someone else's and stays).
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace tunnels::netns {

class Sysctl {
 public:
  // `key` is written as for sysctl(8): dotted ("net.ipv4.ip_forward"; a
  // '/' then stands for a dot in a name, "net.ipv4.conf.eth0/1.forwarding"),
  // or as a path below `root` when its first separator is '/'
  // ("net/ipv4/conf/eth0.1/forwarding"). Null, with a sentence in `*error`,
  // when the parameter cannot be read or written; nothing is changed then.
  static std::unique_ptr<Sysctl> Set(std::string_view key, std::string_view value,
                                     std::string* error, std::string root = "/proc/sys");

  // Reads a parameter (as Set would, without the trailing newline). False,
  // with a sentence in `*error`, when it cannot be read.
  static bool Get(std::string_view key, std::string* value, std::string* error,
                  const std::string& root = "/proc/sys");

  // Takes over a change made earlier by someone who is gone (a killed
  // process, as recorded in a state file): an object as if Set had just
  // changed `key` from `previous` to `value`, so that Restore() writes
  // `previous` back if the parameter still is `value`. Writes nothing now.
  // Null, with a sentence in `*error`, when `key` is malformed.
  static std::unique_ptr<Sysctl> Adopt(std::string_view key, std::string_view value,
                                       std::string_view previous, std::string* error,
                                       std::string root = "/proc/sys");

  Sysctl(const Sysctl&) = delete;
  Sysctl& operator=(const Sysctl&) = delete;
  ~Sysctl();  // Restore(); its error is lost

  // Writes the old value back now (see above); "" or why that failed. Later
  // calls do nothing.
  std::string Restore();

  // Leaves the parameter as it is: neither the destructor nor Restore()
  // writes anything any more (someone else still needs the value and takes
  // over the duty to restore it).
  void Release() { changed_ = false; }

  const std::string& key() const { return key_; }
  const std::string& previous() const { return previous_; }  // as read, without the newline
  bool changed() const { return changed_; }                  // whether Set wrote

 private:
  Sysctl(std::string key, std::string path, std::string value, std::string previous, bool changed);

  std::string key_;
  std::string path_;
  std::string value_;
  std::string previous_;
  bool changed_ = false;
};

}  // namespace tunnels::netns
