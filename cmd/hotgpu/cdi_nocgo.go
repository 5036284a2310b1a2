//go:build !cgo

package main

import (
	"context"
	"os/exec"
)

func init() {
	register(&command{Name: "cdi", Summary: "generate or list the CDI spec of this node's GPUs (runs " + cdiHelperName + ")", Run: runCDIHelper})
}

func runCDIHelper(ctx context.Context, s stdio, args []string) error {
	return runHelper(ctx, s, findSelf(), exec.LookPath, append([]string{"cdi"}, args...))
}
