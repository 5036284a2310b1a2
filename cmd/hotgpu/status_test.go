package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/apiserver"
)

// statusDaemon is a hotgpud stand-in that only knows its status.
type statusDaemon struct {
	apiserver.Backend
	st api.Status
}

func (d *statusDaemon) Status() api.Status { return d.st }

func TestStatusShowsReconcile(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	log := logrus.New()
	log.SetOutput(io.Discard)
	d := &statusDaemon{st: api.Status{GPUs: 8, ReconcileInterval: "30s", Problems: []string{"MIG device 0:1 destroyed while held"}}}
	srv, err := apiserver.NewServer(sock, "", d, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })

	code, stdout, stderr := runCLI("status", "--socket", sock)
	if code != 0 || !strings.Contains(stdout, "reconcile:      every 30s, none yet") || !strings.Contains(stdout, "problem:        MIG device 0:1") {
		t.Fatalf("before the first reconcile: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	d.st.LastReconcile = time.Now().Add(-42 * time.Second)
	if code, stdout, stderr = runCLI("status", "--socket", sock); code != 0 || !strings.Contains(stdout, "every 30s, last 42s ago") {
		t.Fatalf("after one: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}
