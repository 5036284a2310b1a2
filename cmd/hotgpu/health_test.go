package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/apiserver"
)

// healthDaemon is a hotgpud stand-in that only knows health.
type healthDaemon struct {
	apiserver.Backend
	got []api.HealthSetRequest
}

func (h *healthDaemon) Health() []api.HealthStatus {
	return []api.HealthStatus{{Index: 0, UUID: "GPU-0", Healthy: true}, {Index: 1, UUID: "GPU-1", Reason: "Xid 79"}}
}

func (h *healthDaemon) SetHealth(req api.HealthSetRequest) (*api.HealthStatus, error) {
	h.got = append(h.got, req)
	return &api.HealthStatus{Index: 3, UUID: "GPU-3", Healthy: req.Healthy, Reason: req.Reason, Manual: !req.Healthy}, nil
}

func serveHealth(t *testing.T) (*healthDaemon, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	log := logrus.New()
	log.SetOutput(io.Discard)
	d := &healthDaemon{}
	srv, err := apiserver.NewServer(sock, "", d, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return d, sock
}

func TestHealthCommand(t *testing.T) {
	d, sock := serveHealth(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "list", args: []string{"health", "--socket", sock}, stdout: "Xid 79"},
		{name: "set unhealthy, flags after", args: []string{"health", "set", "3", "unhealthy", "--reason", "fan", "--socket", sock}, stdout: "when set healthy"},
		{name: "set healthy, flags first", args: []string{"health", "set", "--socket", sock, "3", "healthy"}, stdout: "healthy"},
		{name: "missing state", args: []string{"health", "set", "3", "--socket", sock}, code: 2, stderr: "needs ID and healthy|unhealthy"},
		{name: "bad state", args: []string{"health", "set", "3", "sick", "--socket", sock}, code: 2, stderr: `got "sick"`},
		{name: "reason with healthy", args: []string{"health", "set", "3", "healthy", "--reason", "x", "--socket", sock}, code: 2, stderr: "--reason is for unhealthy"},
		{name: "help", args: []string{"health", "set", "--help"}, stdout: "hotgpu health set ID healthy|unhealthy"},
		{name: "no daemon", args: []string{"health", "--socket", filepath.Join(t.TempDir(), "none.sock")}, code: 1, stderr: "is it running?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(tt.args...)
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("exit %d stdout %q stderr %q; want %d, %q, %q", code, stdout, stderr, tt.code, tt.stdout, tt.stderr)
			}
		})
	}
	if len(d.got) != 2 || d.got[0] != (api.HealthSetRequest{ID: "3", Reason: "fan"}) || !d.got[1].Healthy {
		t.Fatalf("daemon got %+v", d.got)
	}
}
