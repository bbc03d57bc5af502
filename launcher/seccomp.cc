#include "launcher/seccomp.h"

#include <seccomp.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace tunnels::launcher {
namespace {

struct ReleaseFilter {
  void operator()(void* ctx) const { seccomp_release(static_cast<scmp_filter_ctx>(ctx)); }
};

std::string Failed(const std::string& what, int rc) {
  return "cannot set up the sandbox's seccomp filter (" + what + "): " + std::strerror(-rc);
}

}  // namespace

std::string BlockTerminalInjection() {
  const std::unique_ptr<void, ReleaseFilter> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return "cannot set up the sandbox's seccomp filter (seccomp_init)";
  // A 32-bit program on a 64-bit kernel makes its system calls through the
  // compat entry: filter those too rather than kill it (libseccomp's default
  // for an architecture the filter does not know).
  if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
    for (const auto arch :
         {static_cast<uint32_t>(SCMP_ARCH_X86), static_cast<uint32_t>(SCMP_ARCH_X32)}) {
      if (const int rc = seccomp_arch_add(ctx.get(), arch); rc != 0 && rc != -EEXIST) {
        return Failed("seccomp_arch_add", rc);
      }
    }
  }
  // The kernel compares the request as an unsigned int, but the syscall
  // argument is 64 bits wide: a program could set the upper half to pass an
  // equality test on all 64. Compare the low 32 bits only, as bubblewrap and
  // Flatpak do.
  for (const auto request :
       {static_cast<scmp_datum_t>(TIOCSTI), static_cast<scmp_datum_t>(TIOCLINUX)}) {
    const int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                                    SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, request));
    if (rc != 0) return Failed("seccomp_rule_add ioctl", rc);
  }
  if (const int rc = seccomp_load(ctx.get()); rc != 0) return Failed("seccomp_load", rc);
  return "";
}

}  // namespace tunnels::launcher
