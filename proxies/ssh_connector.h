// The ssh connector: every connection a rule sends through an ssh proxy is a
// direct-tcpip channel of one shared, verified SSH session (see
// ssh_connector.cc for how the session is run).
#pragma once

#include <memory>

#include "proxies/connector.h"

namespace tunnels::proxies {

std::unique_ptr<Connector> MakeSshConnector(const config::Proxy& proxy, ConnectorContext& context);

}  // namespace tunnels::proxies
