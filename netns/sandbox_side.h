// The sandbox's half of `tunnels run`'s network, made from outside: its
// loopback interface up, a server listening inside, and the interception
// that sends the fake addresses to it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "netns/interception.h"
#include "netns/kernel.h"

namespace tunnels::netns {

// Opens the sockets of whoever serves the sandbox (tunnels' DNS server and
// transparent listener); runs inside the sandbox's network namespace. Sets
// `*listener_port` to the port the interception sends connections to.
// False with `*error` set when it cannot listen.
using ListenInside = std::function<bool(std::uint16_t* listener_port, std::string* error)>;

// Through `sandbox`, a Kernel for the sandbox's network namespace (one of
// LinuxKernelIn): brings `lo` up (127.0.0.1 exists only once it is up, and
// the SandboxLink may not have done so yet), then runs `listen` in that
// namespace, then creates the Interception of `spec` there with the
// listener's port, which gets the Kernel. Each step runs only once the one
// before it succeeded; nothing of an earlier step needs undoing, since the
// namespace goes with the sandbox. Null with a sentence in `*error` naming
// the operation, the object, the kernel's text and a hint.
[[nodiscard]] std::unique_ptr<Interception> SetUpSandboxSide(std::unique_ptr<Kernel> sandbox,
                                                             InterceptionSpec spec,
                                                             const ListenInside& listen,
                                                             std::string* error);

}  // namespace tunnels::netns
