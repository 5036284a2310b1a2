package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// hotgpu is built twice from this package. The hotgpu on PATH is built
// without cgo: attach, detach, ls and the other API commands start without
// a dynamic linker or go-nvml to load. Reading NVML needs cgo, so `hotgpu cdi`
// (generate, list) is served by the cgo build, installed next to it as
// hotgpu-cdi, which the cgo-free hotgpu runs with the same arguments
// (cdi_nocgo.go). A cgo build serves `hotgpu cdi` itself (cdi.go).

// cdiHelperName is the cgo build of this CLI that `hotgpu cdi` runs.
const cdiHelperName = "hotgpu-cdi"

// cdiHelperEnv marks a process started as the helper: a helper that is
// itself cgo-free must say so rather than start itself again.
const cdiHelperEnv = "HOTGPU_CDI_HELPER"

// errHelperLoop is what a cgo-free build says when started as the helper.
var errHelperLoop = errors.New(cdiHelperName + " was built without cgo and cannot read NVML: rebuild it with cgo enabled ('make build')")

// exitStatus is a helper's exit code, passed on as this command's; the
// helper has already said why.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("%s exited %d", cdiHelperName, int(e)) }

// runHelper runs `hotgpu-cdi cdi args...` on s and passes on its exit code.
func runHelper(ctx context.Context, s stdio, self string, lookPath func(string) (string, error), args []string) error {
	cmd, err := helperCommand(ctx, self, lookPath, append([]string{"cdi"}, args...))
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s.in, s.out, s.err
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		if err != nil {
			return fmt.Errorf("failed to run %s: %w", cmd.Path, err)
		}
		return nil
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		// As a shell reports it (a closed pipe: 141), and as quietly as the
		// helper would have died on its own.
		return exitStatus(128 + int(ws.Signal()))
	}
	return exitStatus(exit.ExitCode())
}

// helperCommand is `hotgpu-cdi args...`, marked as the helper.
func helperCommand(ctx context.Context, self string, lookPath func(string) (string, error), args []string) (*exec.Cmd, error) {
	if os.Getenv(cdiHelperEnv) != "" {
		return nil, errHelperLoop
	}
	helper, err := findCDIHelper(self, lookPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, helper, args...)
	cmd.Args[0] = cdiHelperName
	cmd.Env = append(os.Environ(), cdiHelperEnv+"=1")
	return cmd, nil
}

// helperOutput runs `hotgpu-cdi args...` and returns what it prints; what
// it says on stderr when it fails is the error.
func helperOutput(ctx context.Context, self string, lookPath func(string) (string, error), args []string) ([]byte, error) {
	cmd, err := helperCommand(ctx, self, lookPath, args)
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimPrefix(strings.TrimSpace(stderr.String()), "hotgpu: ")
		if msg == "" {
			msg = err.Error()
		}
		return nil, errors.New(msg)
	}
	return out, nil
}

// findCDIHelper looks for hotgpu-cdi next to self (the running hotgpu, so a
// bin/ or /usr/local/bin pair stays together), then on PATH.
func findCDIHelper(self string, lookPath func(string) (string, error)) (string, error) {
	dir := "the directory of hotgpu"
	if self != "" {
		if resolved, err := filepath.EvalSymlinks(self); err == nil {
			self = resolved
		}
		dir = filepath.Dir(self)
		p := filepath.Join(dir, cdiHelperName)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := lookPath(cdiHelperName); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("hotgpu cdi and hotgpu doctor read NVML through %s, the cgo build of this CLI, and found it neither in %s nor on PATH: "+
		"install it with 'make install', or build it with 'go build -o %s ./cmd/hotgpu' (cgo enabled)",
		cdiHelperName, dir, filepath.Join(dir, cdiHelperName))
}

// findSelf is the running binary's path, "" when unknown.
func findSelf() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	return self
}
