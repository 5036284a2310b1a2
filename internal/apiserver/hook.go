package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

// HookBackend is what the server needs to serve hotgpu-hook. It is optional:
// a Backend without it answers the hook paths with 404, and the hook then
// works standalone.
type HookBackend interface {
	HookReserve(req api.HookReserveRequest) (*api.HookReservation, error)
	HookRelease(containerID string) ([]ledger.Grant, error)
}

// ErrRefused marks a hook request that policy or the ledger refuses (a GPU
// held by another container, "all" on a node where some GPU is held).
var ErrRefused = errors.New("refused")

func (s *Server) hookRoutes(mux *http.ServeMux) {
	hb, ok := s.backend.(HookBackend)
	if !ok {
		return
	}
	mux.HandleFunc("POST /"+api.Version+"/hook/reserve", func(w http.ResponseWriter, r *http.Request) {
		var req api.HookReserveRequest
		if !decode(w, r, &req) {
			return
		}
		if err := validateHookReserve(req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		res, err := hb.HookReserve(req)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, res)
		case errors.Is(err, ledger.ErrHeld), errors.Is(err, ErrRefused):
			writeError(w, http.StatusConflict, err.Error())
		default:
			s.log.WithError(err).WithField("op", "hook-reserve").Warn("request failed")
			writeError(w, http.StatusUnprocessableEntity, err.Error())
		}
	})
	mux.HandleFunc("POST /"+api.Version+"/hook/release", func(w http.ResponseWriter, r *http.Request) {
		var req api.HookReleaseRequest
		if !decode(w, r, &req) {
			return
		}
		if err := validContainerID(req.ContainerID); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		freed, err := hb.HookRelease(req.ContainerID)
		if err != nil {
			writeError(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, freed)
	})
}

func validateHookReserve(r api.HookReserveRequest) error {
	if err := validContainerID(r.ContainerID); err != nil {
		return err
	}
	switch {
	case r.PID <= 1:
		return fmt.Errorf("pid %d is not a container process", r.PID)
	case r.All == (len(r.IDs) > 0):
		return errors.New("give either GPU ids or all")
	case len(r.Cgroup) > 4096:
		return errors.New("cgroup path too long")
	}
	return validIDs(r.IDs)
}

// validContainerID accepts the ids runtimes make (Docker and containerd: 64
// hex digits; podman, CRI-O and runc users: names) but nothing that could be
// read as a path or span lines in a log.
func validContainerID(id string) error {
	if id == "" || len(id) > 128 || strings.ContainsAny(id, "/\\ \t\r\n") || id == "." || id == ".." {
		return fmt.Errorf("invalid container id %q", truncateID(id))
	}
	return nil
}

func truncateID(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
