package main

import (
	"context"
	"fmt"
	"time"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/version"
)

func init() {
	register(&command{Name: "version", Summary: "print the versions of hotgpu and of the running hotgpud", Run: runVersion})
}

const versionHelp = `Usage: hotgpu version [--socket PATH]

Print this CLI's version and, when it answers, the running hotgpud's.
`

func runVersion(ctx context.Context, s stdio, args []string) error {
	fs := newFlagSet("hotgpu version", versionHelp)
	socket := fs.String("socket", defaultSocket, "hotgpud API socket")
	if err := parseFlags(fs, args, s); err != nil {
		return err
	}
	fmt.Fprintln(s.out, "hotgpu ", version.Version)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if st, err := api.NewClient(*socket).Status(ctx); err == nil {
		fmt.Fprintln(s.out, "hotgpud", st.Version)
	} else {
		fmt.Fprintln(s.out, "hotgpud not reachable at", *socket)
	}
	return nil
}
