//go:build !cgo

package main

import (
	"context"
	"os/exec"
)

func init() {
	register(&command{Name: "doctor", Summary: doctorSummary + " (runs " + cdiHelperName + ")", Run: runDoctorHelper})
}

// runDoctorHelper runs `hotgpu-cdi doctor args...`: the doctor reads NVML
// and validates the CDI spec with the CDI library, which this build leaves
// out so that the API commands start fast.
func runDoctorHelper(ctx context.Context, s stdio, args []string) error {
	return runHelper(ctx, s, findSelf(), exec.LookPath, append([]string{"doctor"}, args...))
}
