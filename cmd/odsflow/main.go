// Command odsflow is the Benthos binary of the ODS pipelines: every Benthos
// command (run, lint, test, list, echo, …) with the pure and io components,
// our plugins, and the `dev` command that runs a local stack.
package main

import (
	"context"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"

	_ "github.com/odsflow/odsflow/plugins/all"
)

// Stamped at build time: -ldflags "-X main.version=… -X main.dateBuilt=…".
var (
	version   = "dev"
	dateBuilt = "unknown"
)

func main() {
	service.RunCLI(context.Background(),
		service.CLIOptSetBinaryName("odsflow"),
		service.CLIOptSetProductName("odsflow"),
		service.CLIOptSetVersion(version, dateBuilt),
		service.CLIOptSetDocumentationURL("https://github.com/odsflow/odsflow"),
		service.CLIOptAddCommand(devCommand()),
		service.CLIOptAddCommand(stateCommand()),
		service.CLIOptAddCommand(simulateCommand()),
		service.CLIOptAddCommand(demoCommand()),
		service.CLIOptAddCommand(dlqCommand()),
		service.CLIOptAddCommand(docsCommand()),
	)
}
