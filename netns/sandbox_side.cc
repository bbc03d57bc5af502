#include "netns/sandbox_side.h"

#include <cerrno>

namespace tunnels::netns {

std::unique_ptr<Interception> SetUpSandboxSide(std::unique_ptr<Kernel> sandbox,
                                               InterceptionSpec spec, const ListenInside& listen,
                                               std::string* error) {
  if (const Status s = sandbox->SetLinkUp("lo"); !s.ok()) {
    *error =
        "cannot bring up the sandbox's loopback interface lo (ip link set lo up): " + s.message +
        (s.error == EPERM ? "; this needs CAP_NET_ADMIN: run tunnels as root"
                          : "; without it the sandbox has no 127.0.0.1 for tunnels' DNS server");
    return nullptr;
  }
  std::string listen_error;
  bool listening = false;
  const Status entered = sandbox->RunInNetns([&] {
    listening = listen(&spec.listener_port, &listen_error);
    return Status::Ok();
  });
  if (!entered.ok()) {
    *error = "cannot listen in the sandbox: " + entered.message +
             "; tunnels needs CAP_SYS_ADMIN to enter the namespace it created";
    return nullptr;
  }
  if (!listening) {
    *error = listen_error;
    return nullptr;
  }
  return Interception::Create(spec, std::move(sandbox), error);
}

}  // namespace tunnels::netns
