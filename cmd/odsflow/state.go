package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/odsflow/odsflow/plugins/join"
)

func stateCommand() *cli.Command {
	return &cli.Command{
		Name:  "state",
		Usage: "Look into the cdc_join state on disk",
		Subcommands: []*cli.Command{{
			Name:  "inspect",
			Usage: "Counts per table and relation, held events, and one key's state",
			Description: `Reads a cdc_join state_dir. The directory is locked while a pipeline uses it:
stop the pipeline, or inspect a copy.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "the state_dir", Required: true},
				&cli.StringFlag{Name: "key", Usage: "show this key's state in every table and relation"},
			},
			Action: func(c *cli.Context) error {
				if err := join.Inspect(c.Context, c.String("dir"), c.String("key"), os.Stdout); err != nil {
					fmt.Fprintf(os.Stderr, "odsflow state inspect: %v\n", err)
					return cli.Exit("", 1)
				}
				return nil
			},
		}},
	}
}
