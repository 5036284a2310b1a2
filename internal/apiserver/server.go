// Package apiserver serves hotgpud's local control API (the contract and
// its client are internal/api) on a unix socket that only root, or one
// configured group, may use: attach, detach, the GPUs and their holders,
// status, health and hotgpu-hook's reservations. It checks the caller's
// kernel credentials (SO_PEERCRED, SO_PEERGROUPS) on every connection, not
// just the socket's file mode.
package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/alloc"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// Backend is what the server needs from the daemon.
type Backend interface {
	Attach(t attach.Target, ids []string, count int) (*attach.Result, error)
	Detach(t attach.Target, ids []string, force bool) (*attach.Result, error)
	GPUs() []api.GPUStatus
	Status() api.Status
}

// MIGBackend is a Backend that also attaches MIG devices by profile
// (api.AttachRequest.MIGProfile).
type MIGBackend interface {
	AttachMIG(t attach.Target, profile string, count int) (*attach.Result, error)
}

// Server serves the API on a unix socket.
type Server struct {
	path    string
	gid     int // -1: root only
	backend Backend
	log     *logrus.Entry
	srv     *http.Server
	ln      net.Listener
}

// maxBody bounds request bodies; requests are tiny.
const maxBody = 64 << 10

// NewServer creates the socket at path: 0600 and root's, or 0660 and
// owned by group when group is set. A stale socket file is replaced.
func NewServer(path, group string, b Backend, log *logrus.Entry) (*Server, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("failed to look up API group %q: %w", group, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("failed to create API socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("failed to remove stale API socket: %w", err)
	}
	old := unix.Umask(0o177) // the socket is never world-accessible, not even briefly
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Chown(path, 0, gid); err == nil {
			err = os.Chmod(path, 0o660)
		}
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("failed to open API socket to group %s: %w", group, err)
		}
	}
	s := &Server{path: path, gid: gid, backend: b, log: log.WithField("component", "api"), ln: ln}
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext:       peerContext,
	}
	return s, nil
}

// Serve answers requests until Shutdown.
func (s *Server) Serve() error {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server and removes the socket.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	_ = os.Remove(s.path)
	return err
}

type peerKey struct{}

// peerGroupsKey holds the caller's supplementary groups ([]uint32).
type peerGroupsKey struct{}

// peerContext records the connecting process's credentials and groups.
func peerContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	var groups []uint32
	_ = raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err == nil {
			// Unreadable groups leave only the primary gid to match.
			groups, _ = peerGroups(int(fd), cred.Pid)
		}
	})
	if err != nil || cred == nil {
		return ctx
	}
	return context.WithValue(context.WithValue(ctx, peerKey{}, *cred), peerGroupsKey{}, groups)
}

func (s *Server) allowed(r *http.Request) (unix.Ucred, bool) {
	cred, ok := r.Context().Value(peerKey{}).(unix.Ucred)
	if !ok {
		return cred, false
	}
	if cred.Uid == 0 {
		return cred, true
	}
	if s.gid < 0 {
		return cred, false
	}
	groups, _ := r.Context().Value(peerGroupsKey{}).([]uint32)
	return cred, int(cred.Gid) == s.gid || slices.Contains(groups, uint32(s.gid))
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /"+api.Version+"/attach", s.handleAttach)
	mux.HandleFunc("POST /"+api.Version+"/detach", s.handleDetach)
	mux.HandleFunc("GET /"+api.Version+"/gpus", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.backend.GPUs())
	})
	mux.HandleFunc("GET /"+api.Version+"/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.backend.Status())
	})
	s.hookRoutes(mux)
	s.healthRoutes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred, ok := s.allowed(r)
		if !ok {
			s.log.WithFields(logrus.Fields{"uid": cred.Uid, "pid": cred.Pid}).Warn("refused API caller")
			writeError(w, http.StatusForbidden, "permission denied: the hotgpu API is for root (run with sudo)")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) handleAttach(w http.ResponseWriter, r *http.Request) {
	var req api.AttachRequest
	if !decode(w, r, &req) {
		return
	}
	if err := validateAttach(req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var res *attach.Result
	var err error
	if req.MIGProfile != "" {
		mig, ok := s.backend.(MIGBackend)
		if !ok {
			writeError(w, http.StatusBadRequest, "this hotgpud does not attach MIG devices by profile")
			return
		}
		res, err = mig.AttachMIG(req.Target, req.MIGProfile, req.Count)
	} else {
		res, err = s.backend.Attach(req.Target, req.IDs, req.Count)
	}
	s.answer(w, "attach", res, err)
}

func (s *Server) handleDetach(w http.ResponseWriter, r *http.Request) {
	var req api.DetachRequest
	if !decode(w, r, &req) {
		return
	}
	if err := validateDetach(req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	res, err := s.backend.Detach(req.Target, req.IDs, req.Force)
	s.answer(w, "detach", res, err)
}

func (s *Server) answer(w http.ResponseWriter, op string, res *attach.Result, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, attach.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ledger.ErrHeld), errors.Is(err, alloc.ErrHeld), errors.Is(err, alloc.ErrNotEnough), errors.Is(err, attach.ErrBusy):
		writeError(w, http.StatusConflict, err.Error())
	default:
		s.log.WithError(err).WithField("op", op).Warn("request failed")
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid request: "+err.Error())
		return false
	}
	return true
}

// writeError answers code with msg as the body's error.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func validateTarget(t attach.Target) error {
	n := 0
	for _, set := range []bool{t.ContainerID != "", t.PodName != "", t.PID != 0} {
		if set {
			n++
		}
	}
	switch {
	case n != 1:
		return errors.New("give exactly one target: a container id, a pod or a pid")
	case t.PID < 0:
		return errors.New("pid must be positive")
	case t.PodName != "" && t.PodNamespace == "":
		return errors.New("a pod target needs its namespace (NS/NAME)")
	case len(t.ContainerID) > 128 || len(t.PodName) > 253 || len(t.PodNamespace) > 63 || len(t.ContainerName) > 253:
		return errors.New("target name too long")
	}
	if t.ContainerID != "" {
		return validContainerID(t.ContainerID)
	}
	return nil
}

func validateAttach(r api.AttachRequest) error {
	if err := validateTarget(r.Target); err != nil {
		return err
	}
	if (len(r.IDs) > 0) == (r.Count > 0) {
		return errors.New("give either GPU ids or a count")
	}
	if r.Count > policy.MaxIDs || r.Count < 0 {
		return fmt.Errorf("count must be between 1 and %d", policy.MaxIDs)
	}
	if r.MIGProfile != "" {
		if len(r.IDs) > 0 {
			return errors.New("a MIG profile goes with a count, not with ids (name MIG devices as \"0:1\" or by MIG UUID)")
		}
		if err := policy.ValidateMIGProfile(r.MIGProfile); err != nil {
			return err
		}
	}
	return validIDs(r.IDs)
}

func validateDetach(r api.DetachRequest) error {
	if err := validateTarget(r.Target); err != nil {
		return err
	}
	if (len(r.IDs) > 0) == r.All {
		return errors.New("give either GPU ids or all")
	}
	return validIDs(r.IDs)
}

func validIDs(ids []string) error {
	if len(ids) > policy.MaxIDs {
		return fmt.Errorf("at most %d GPU ids", policy.MaxIDs)
	}
	for _, id := range ids {
		if err := policy.ValidateID(id); err != nil {
			return err
		}
	}
	return nil
}
