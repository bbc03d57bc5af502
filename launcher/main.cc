#include "launcher/cli.h"

int main(int argc, char** argv) { return tunnels::launcher::Main(argc, argv); }
