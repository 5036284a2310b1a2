package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// checkingBackend fails the fuzz test when a request that reaches it is one
// the server should have refused.
type checkingBackend struct{ t *testing.T }

func (b checkingBackend) Attach(tg attach.Target, ids []string, count int) (*attach.Result, error) {
	b.checkTarget(tg)
	if (len(ids) > 0) == (count > 0) || count < 0 || count > policy.MaxIDs {
		b.t.Fatalf("attach reached the backend with ids %q and count %d", ids, count)
	}
	b.checkIDs(ids)
	return &attach.Result{}, nil
}

func (b checkingBackend) Detach(tg attach.Target, ids []string, force bool) (*attach.Result, error) {
	b.checkTarget(tg)
	b.checkIDs(ids)
	return &attach.Result{}, nil
}

func (b checkingBackend) GPUs() []api.GPUStatus { return nil }
func (b checkingBackend) Status() api.Status    { return api.Status{} }

func (b checkingBackend) HookReserve(req api.HookReserveRequest) (*api.HookReservation, error) {
	if validContainerID(req.ContainerID) != nil || req.PID <= 1 || req.All == (len(req.IDs) > 0) {
		b.t.Fatalf("hook reserve reached the backend: %+v", req)
	}
	b.checkIDs(req.IDs)
	return &api.HookReservation{GPUs: []gpu.GPU{}}, nil
}

func (b checkingBackend) HookRelease(id string) ([]ledger.Grant, error) {
	if validContainerID(id) != nil {
		b.t.Fatalf("hook release reached the backend with container id %q", id)
	}
	return nil, nil
}

func (b checkingBackend) checkTarget(tg attach.Target) {
	n := 0
	for _, set := range []bool{tg.ContainerID != "", tg.PodName != "", tg.PID != 0} {
		if set {
			n++
		}
	}
	if n != 1 || tg.PID < 0 || (tg.PodName != "" && tg.PodNamespace == "") || len(tg.ContainerID) > 128 {
		b.t.Fatalf("target reached the backend: %+v", tg)
	}
}

func (b checkingBackend) checkIDs(ids []string) {
	if len(ids) > policy.MaxIDs {
		b.t.Fatalf("%d ids reached the backend", len(ids))
	}
	for _, id := range ids {
		if policy.ValidateID(id) != nil || strings.ContainsAny(id, "/.") {
			b.t.Fatalf("id %q reached the backend", id)
		}
	}
}

// FuzzAPIRequest sends arbitrary bodies to every POST route as root: the
// server answers each with JSON and a status code, and only requests that
// pass validation reach the daemon.
func FuzzAPIRequest(f *testing.F) {
	routes := []string{"/v1/attach", "/v1/detach", "/v1/hook/reserve", "/v1/hook/release"}
	for i, body := range []string{
		`{"target":{"podNamespace":"ml","podName":"p"},"count":1}`,
		`{"target":{"containerID":"abc"},"ids":["0","GPU-12345678"]}`,
		`{"target":{"pid":42},"all":true,"force":true}`,
		`{"containerID":"abc","pid":7,"ids":["1"]}`,
		`{"containerID":"../x"}`,
		`{"target":{"pid":-1},"count":1}`,
		`{"target":{"containerID":"a"},"ids":["../../dev/sda"]}`,
		`{"target":{"containerID":"a"},"count":1}{"target":{"pid":1}}`,
		`{"target":{"containerID":"a"},"count":1,"extra":1}`,
		`[`, ``,
	} {
		f.Add(uint8(i), []byte(body))
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		s := &Server{gid: -1, backend: checkingBackend{t}, log: logrus.NewEntry(log)}
		h := s.routes()
		path := routes[int(route)%len(routes)]
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req = req.WithContext(context.WithValue(req.Context(), peerKey{}, unix.Ucred{Uid: 0, Pid: 1}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == 0 || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %q: answer %d %q is not JSON", path, body, rec.Code, rec.Body.String())
		}
		if rec.Code >= 400 {
			var e api.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%s %q: error answer %d without a message: %q", path, body, rec.Code, rec.Body.String())
			}
		}
	})
}

// FuzzAPIRefusesNonRoot: whatever a caller that is neither root nor in the
// API group sends, it is refused before the body is read.
func FuzzAPIRefusesNonRoot(f *testing.F) {
	f.Add(uint32(1000), uint32(1000), `{"target":{"pid":42},"count":1}`)
	f.Add(uint32(65534), uint32(0), `{"target":{"pid":42},"count":1}`)
	log := logrus.New()
	log.SetOutput(io.Discard)
	f.Fuzz(func(t *testing.T, uid, gid uint32, body string) {
		if uid == 0 {
			return
		}
		s := &Server{gid: -1, backend: refuseAll{checkingBackend{t}}, log: logrus.NewEntry(log)}
		req := httptest.NewRequest(http.MethodPost, "/v1/attach", strings.NewReader(body))
		req = req.WithContext(context.WithValue(req.Context(), peerKey{}, unix.Ucred{Uid: uid, Gid: gid, Pid: 2}))
		rec := httptest.NewRecorder()
		s.routes().ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Fatalf("uid %d gid %d: answer %d, want 403", uid, gid, rec.Code)
		}
	})
}

type refuseAll struct{ checkingBackend }

func (r refuseAll) Attach(attach.Target, []string, int) (*attach.Result, error) {
	r.t.Fatal("a non-root caller reached the backend")
	return nil, nil
}
