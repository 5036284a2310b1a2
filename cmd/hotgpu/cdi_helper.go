package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// hotgpu is built twice from this package. The hotgpu on PATH is built
// without cgo and links only what the API commands need (attach, detach,
// ls, status, health, version: the API's contract and client), so a run
// has no dynamic linker, go-nvml, CDI library or YAML parser to load and
// initialise (its package inits take ~0.6 ms here, against ~3 ms when it
// linked the daemon's packages through the API's). `hotgpu
// cdi` (generate, list) reads NVML, which needs cgo, and `hotgpu doctor`
// reads NVML and validates the CDI spec with the CDI library: both are
// served by the cgo build, installed next to it as hotgpu-cdi, which the
// cgo-free hotgpu runs with the same arguments (cdi_nocgo.go,
// doctor_nocgo.go). A cgo build serves both itself (cdi.go, doctor.go).

// doctorSummary is doctor's line in hotgpu's help, in both builds.
const doctorSummary = "check this node end to end: driver, CDI spec, runtime, hotgpud, live attach"

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

// runHelper runs `hotgpu-cdi args...` on s and passes on its exit code.
func runHelper(ctx context.Context, s stdio, self string, lookPath func(string) (string, error), args []string) error {
	cmd, err := helperCommand(ctx, self, lookPath, args)
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
	return "", fmt.Errorf("hotgpu cdi and hotgpu doctor run in %s, the cgo build of this CLI (they read NVML), and it is neither in %s nor on PATH: "+
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
